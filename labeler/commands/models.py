"""`labeler models list|add|remove`: the model versions a workspace has registered.

`list` says, per version, whether its checkpoint is still usable where it was registered (the folder
exists and its model.json is the content that was registered), without loading torch; `--verify` loads
each one fully. `remove` unregisters a version (its folder stays on disk) and says what went with it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from labeler.cli import CommandError, arg, arguments, command
from projects.store.target import display
from projects.workspace import Workspace


def model_state(ws: Workspace, row: dict[str, Any]) -> tuple[str, str]:
    """(state, detail): removed, missing (folder gone), changed (model.json is not what was registered),
    ok, or unverified (registered before content hashes were kept)."""
    folder = ws.model_path(row)
    if row.get("removed_at"):
        return "removed", f"removed {row['removed_at']}; kept for the provenance of its annotations"
    if not folder.is_dir():
        return "missing", f"{folder}: folder not found (moved or deleted?)"
    try:
        sha = hashlib.sha256((folder / "model.json").read_bytes()).hexdigest()
    except OSError as e:
        return "missing", f"{folder / 'model.json'}: cannot be read ({e.strerror or e})"
    if row.get("sha256") is None:
        return "unverified", "registered by an older Labeler: verified when next loaded"
    if sha != row["sha256"]:
        return "changed", f"{folder / 'model.json'}: changed since it was registered"
    return "ok", ""


@command("models list", help="the model versions registered in a workspace, newest last, and whether each is usable")
@arguments(arg("ws"), arg("--json", action="store_true", help="print JSON"),
           arg("--all", action="store_true", help="also the removed versions that annotations still name"),
           arg("--verify", action="store_true", help="load each checkpoint fully (weights, architecture, taxonomy)"))
def models_list(args) -> int:
    with Workspace.open(args.ws) as ws:
        rows = ws.models(include_removed=args.all)
        latest = ws.latest_model()
        out = []
        for row in rows:
            state, detail = model_state(ws, row)
            if args.verify and state in ("ok", "unverified"):
                from inference.checkpoint import load_checkpoint
                from inference.registry import check_registered
                from projects.errors import LabelerError

                try:
                    check_registered(ws, row, load_checkpoint(ws.model_path(row), ws.super_taxonomy()))
                    state, detail = "ok", ""
                except LabelerError as e:
                    state, detail = "broken", str(e)
            usage = ws.model_usage(row["id"])
            out.append({"id": row["id"], "version": row["version"], "path": str(ws.model_path(row)),
                        "stored_path": row["path"], "sha256": row.get("sha256"), "created_at": row["created_at"],
                        "state": state, "detail": detail, "latest": latest is not None and row["id"] == latest["id"],
                        "predicted_images": usage["predicted_images"], "annotations": usage["annotations"]})
    if args.json:
        print(json.dumps({"workspace": display(ws.location), "models": out}, indent=2))
        return 0
    if not out:
        print(f"no model registered in {args.ws}; train one (`labeler train`) or `labeler models add {args.ws} DIR`")
        return 0
    for m in out:
        flag = " (latest)" if m["latest"] else ""
        print(f"{m['version']}{flag}  [{m['state']}]  {m['path']}  {m['predicted_images']} images predicted, "
              f"{m['annotations']} annotations from its pre-labels")
        if m["detail"]:
            print(f"    {m['detail']}")
    return 0


@command("models add", help="verify a checkpoint folder fully and register it as a model version")
@arguments(arg("ws"), arg("dir", metavar="DIR", help="checkpoint folder (model.json + model.safetensors)"))
def models_add(args) -> int:
    from inference.registry import ensure_registered

    with Workspace.open(args.ws) as ws:
        reg = ensure_registered(ws, args.dir)
        stored = ws.model(reg.version)["path"]
    if reg.note:
        print(reg.note)
    print(f"{'registered' if reg.new else 'already registered:'} model {reg.version} from {stored}")
    return 0


@command("models remove", help="unregister a model version (its checkpoint folder is left on disk)")
@arguments(arg("ws"), arg("version", metavar="VERSION"))
def models_remove(args) -> int:
    with Workspace.open(args.ws) as ws:
        if ws.model(args.version) is None:
            known = ", ".join(m["version"] for m in ws.models()) or "none"
            raise CommandError(f"{args.ws}: no registered model version {args.version!r} (registered: {known})")
        done = ws.remove_model(args.version)
        folder = ws.model_path(done["model"])
    print(f"removed model {args.version} ({folder}, left on disk): deleted {done['predictions']} cached "
          f"predictions on {done['predicted_images']} images, {done['open_findings']} open lint findings and "
          f"{done['linted_images']} lint scores")
    if done["row_kept"]:
        print(f"kept: {done['annotations']} annotations made from its pre-labels and {done['answered_findings']} "
              f"answered lint findings still name {args.version} as their source")
    return 0

"""Registering a trained checkpoint as a model version of a workspace.

The workspace's `models` table is what the pre-label worker watches to hot-swap models. A checkpoint is
untrusted input, so it is verified in full (`load_checkpoint`: description, paths, groups, weights hash,
architecture, state dict, super-taxonomy) *before* a row is written: a refused model is never registered
and can never become the latest one that every later session tries to load.

A model is identified by its content, not only its name: the SHA-256 of its model.json (which pins the
weights' SHA-256) is stored with the row. Hence:

* the same content under the same version, in the same folder or a copy, is the same model (its cached
  predictions stay valid); if the registered folder has gone (moved or deleted), the row follows the model
  to the folder given now;
* other content under an already registered version (a tampered or edited copy, or another model that
  kept the name) is **refused** with a message naming both folders, never silently taken for the
  registered one: give it a new version, or `labeler models remove VERSION` first;
* a registered model whose files changed afterwards is refused when it is loaded (`check_registered`).

The folder is stored relative to the workspace when it lies inside it (a copied or moved workspace keeps
its models), absolute otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.checkpoint import META, Checkpoint, CheckpointError, check_taxonomy, load_checkpoint, read_meta_and_hash
from projects.workspace import Workspace

CONFIG_KEYS = ("model", "image_size", "layout", "approach", "normalisation", "groups", "data")


@dataclass(frozen=True)
class Registration:
    model_id: int
    version: str
    folder: Path
    new: bool  # a row was written (or a removed one brought back)
    note: str | None = None  # what else happened, for the user (e.g. the row was re-pointed)


def meta_sha256(folder: Path) -> str | None:
    """The SHA-256 of `folder/model.json` as it is on disk, or None when it cannot be read."""
    try:
        return hashlib.sha256((Path(folder) / META).read_bytes()).hexdigest()
    except OSError:
        return None


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def ensure_registered(ws: Workspace, folder: str | Path, checkpoint: Checkpoint | None = None) -> Registration:
    """Verify the checkpoint in `folder` fully, then register it, or find the row that already holds it.

    Raises CheckpointError (naming the file) for any refused checkpoint and for other content under a
    registered version; nothing is written then. `checkpoint`: one already loaded from `folder` with this
    workspace's super-taxonomy (saves loading it twice)."""
    folder = Path(folder).absolute()
    ck = checkpoint or load_checkpoint(folder, ws.super_taxonomy())
    meta, version, sha = ck.meta, ck.version, ck.sha256
    row = ws.model(version, include_removed=True)
    if row is None or row["removed_at"] is not None:
        config = {k: meta[k] for k in CONFIG_KEYS if k in meta}
        metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
        mid = ws.register_model(version, folder, config=config, metrics=metrics, sha256=sha)
        return Registration(mid, version, folder, True, None if row is None else
                            f"model {version} had been removed; registered again from {folder}")
    registered = ws.model_path(row)
    same_folder = _same_folder(registered, folder)
    if row["sha256"] is None and (same_folder or meta_sha256(registered) == sha):
        ws.update_model(row["id"], sha256=sha)  # a row from before content hashes: this is its content
        row["sha256"] = sha
    if row["sha256"] != sha:
        was = f"{row['sha256'][:12]}…" if row["sha256"] else "unknown"
        raise CheckpointError(
            f"{folder / META}: model version {version!r} is already registered from {registered} with other "
            f"content (model.json SHA-256 {was} there, {sha[:12]}… here): this copy was modified, or is another "
            f"model under the same version, and is refused; give it a new version in its {META}, or remove "
            f"the registered one first (`labeler models remove {version}`)")
    if not same_folder and meta_sha256(registered) != sha:
        ws.update_model(row["id"], path=folder)  # the registered folder is gone or changed: follow the model
        return Registration(row["id"], version, folder, False,
                            f"model {version}: its registered folder {registered} is missing or changed; "
                            f"now registered from {folder}")
    return Registration(row["id"], version, folder, False)


def register_checkpoint(ws: Workspace, folder: str | Path) -> int:
    """Register the checkpoint in `folder` with the workspace (after verifying it fully); returns the model
    id. Registering the same content again returns its existing id. Raises CheckpointError when refused."""
    return ensure_registered(ws, folder).model_id


def model_id_for(ws: Workspace, folder: str | Path) -> int | None:
    """The id under which this checkpoint is registered (same version and same content), or None."""
    meta, sha = read_meta_and_hash(folder)
    row = ws.model(meta["version"])
    return int(row["id"]) if row is not None and row["sha256"] in (sha, None) else None


def check_registered(ws: Workspace, row: dict[str, Any], checkpoint: Checkpoint) -> None:
    """A registered model, just loaded from its folder, is still what was registered and still fits the
    workspace; a row from before content hashes adopts the hash of what loaded."""
    where = checkpoint.folder / META
    if checkpoint.version != row["version"]:
        raise CheckpointError(f"{where}: holds model version {checkpoint.version!r}, not the registered "
                              f"{row['version']!r}")
    if row.get("sha256") and checkpoint.sha256 and row["sha256"] != checkpoint.sha256:
        raise CheckpointError(f"{where}: changed since model {row['version']} was registered (model.json SHA-256 "
                              f"differs); register the new files under a new version, or "
                              f"`labeler models remove {row['version']}`")
    check_taxonomy(checkpoint.meta, ws.super_taxonomy(), where)
    if not row.get("sha256") and checkpoint.sha256:
        ws.update_model(row["id"], sha256=checkpoint.sha256)

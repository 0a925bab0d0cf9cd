"""Checkpoints: `model.safetensors` (the weights, no pickle) + `model.json` (everything needed to use them).

The JSON records the model config name, image size, normalisation, the super-taxonomy with its node
order (the class order), the layout and its groups, the approach, a snapshot of the training data and
the metrics. A checkpoint is refused, with a `CheckpointError` naming the file, when a file is missing,
corrupt (the JSON keeps the SHA-256 of the weights), or trained on a super-taxonomy that the workspace's
does not extend (nodes may be appended after training, never reordered or renamed).

Both files are written to temporary names and moved into place, weights first: a crash leaves the
previous checkpoint or none, never a JSON that points at half-written weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from inference.architectures import Detector, Group, build_detector
from projects.errors import LabelerError
from projects.taxonomy import SuperTaxonomy, TaxonomyError

WEIGHTS = "model.safetensors"
META = "model.json"
FORMAT = "labeler-detector"
FORMAT_VERSION = 1
REQUIRED = ("model", "image_size", "layout", "groups", "super_taxonomy", "approach")


class CheckpointError(LabelerError, RuntimeError):
    """A checkpoint cannot be used; the message names the file and says why."""


@dataclass
class Checkpoint:
    folder: Path
    model: Detector
    meta: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    @property
    def node_names(self) -> list[str]:
        return [n["name"] for n in self.meta["super_taxonomy"]["nodes"]]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(folder: str | Path, model: Detector, meta: dict[str, Any], dtype: str = "float32") -> Path:
    """Write the weights and the JSON; returns the folder. `meta` needs at least REQUIRED keys;
    `dtype="float16"` halves the file (the demo model ships that way; it is loaded back as float32)."""
    folder = Path(folder)
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(f"{folder / META}: metadata lacks {', '.join(missing)}")
    if dtype not in ("float32", "float16"):
        raise CheckpointError(f"dtype must be float32 or float16, got {dtype!r}")
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype == "float16":
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    tmp_w = folder / (WEIGHTS + ".tmp")
    save_file(state, str(tmp_w), metadata={"format": FORMAT})
    sha = file_sha256(tmp_w)
    os.replace(tmp_w, folder / WEIGHTS)
    created = meta.get("created_at") or datetime.now(UTC).isoformat(timespec="seconds")
    version = meta.get("version") or f"{meta['approach']}-{created.replace(':', '').replace('-', '')[:15]}-{sha[:8]}"
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "version": version,
            "created_at": created, "weights": {"file": WEIGHTS, "sha256": sha, "dtype": dtype}}
    tmp_m = folder / (META + ".tmp")
    tmp_m.write_text(json.dumps(full, indent=1), encoding="utf-8")
    os.replace(tmp_m, folder / META)
    return folder


def read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META
    if not path.is_file():
        raise CheckpointError(f"{path}: not found (a checkpoint folder holds {META} and {WEIGHTS})")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint description ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a Labeler detector checkpoint")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')} is newer than this "
                              f"Labeler understands ({FORMAT_VERSION})")
    missing = [k for k in (*REQUIRED, "version", "weights") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: lacks {', '.join(missing)}")
    return meta


def check_taxonomy(meta: dict[str, Any], sup: SuperTaxonomy, where: Path) -> None:
    """The workspace's super-taxonomy must start with the checkpoint's nodes, same names, same parents."""
    try:
        trained = SuperTaxonomy.from_dict(meta["super_taxonomy"], source=str(where))
    except TaxonomyError as e:
        raise CheckpointError(f"{where}: invalid super-taxonomy in checkpoint ({e})") from e
    if len(trained) > len(sup):
        raise CheckpointError(f"{where}: the model was trained on {len(trained)} super-taxonomy nodes, the "
                              f"workspace has only {len(sup)}; it belongs to another workspace")
    for i, (a, b) in enumerate(zip(trained.nodes, sup.nodes)):
        if a != b:
            raise CheckpointError(
                f"{where}: super-taxonomy mismatch at node {i}: the model has {a.name!r} (parent {a.parent!r}), "
                f"the workspace has {b.name!r} (parent {b.parent!r}); retrain on this workspace")


def load_checkpoint(folder: str | Path, super_taxonomy: SuperTaxonomy | None = None,
                    device: str | torch.device = "cpu") -> Checkpoint:
    """Read, verify and build the model (float32, eval mode). Raises CheckpointError naming the file."""
    folder = Path(folder)
    meta = read_meta(folder)
    if super_taxonomy is not None:
        check_taxonomy(meta, super_taxonomy, folder / META)
    wpath = folder / meta["weights"].get("file", WEIGHTS)
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: weights file not found")
    expected = meta["weights"].get("sha256")
    if expected and file_sha256(wpath) != expected:
        raise CheckpointError(f"{wpath}: corrupt weights (SHA-256 differs from the one in {META})")
    try:
        state = load_file(str(wpath), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{wpath}: not a readable safetensors file ({e})") from e
    try:
        groups = [Group.from_dict(g) for g in meta["groups"]]
        model = build_detector(meta["layout"], meta["model"], groups, int(meta["image_size"]), pretrained="none")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / META}: cannot build the model it describes ({e})") from e
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"{wpath}: weights do not fit the model in {META} ({first})") from e
    model.to(device).eval()
    return Checkpoint(folder, model, meta)

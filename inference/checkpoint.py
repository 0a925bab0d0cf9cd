"""Checkpoints: `model.safetensors` (the weights, no pickle) + `model.json` (everything needed to use them).

The JSON records the model config name, image size, normalisation, the super-taxonomy with its node
order (the class order), the layout and its groups, the approach, a snapshot of the training data and
the metrics. A checkpoint is untrusted input (a folder a user was sent): it is refused, with a
`CheckpointError` naming the file, when a file is missing, corrupt (the JSON keeps the SHA-256 of the
weights), incomplete or mistyped, when a path in it leads outside its folder, when its head groups are not
in its super-taxonomy's order (a permuted order would swap classes), when the weights do not fit the
architecture it describes, or when it was trained on a super-taxonomy that the workspace's does not extend
(nodes may be appended after training, never reordered or renamed). The SHA-256 of model.json identifies
a checkpoint (`Checkpoint.sha256`): it pins the weights' hash, so two folders with equal hashes hold the
same model.

Both files are written to temporary names and moved into place, weights first: a crash leaves the
previous checkpoint or none, never a JSON that points at half-written weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from inference.architectures import Detector, Group, build_detector
from projects.errors import LabelerError, shorten
from projects.taxonomy import SuperTaxonomy, TaxonomyError

WEIGHTS = "model.safetensors"
META = "model.json"
FORMAT = "labeler-detector"
FORMAT_VERSION = 1
REQUIRED = ("model", "image_size", "layout", "groups", "super_taxonomy", "approach")
MAX_META_BYTES = 16 << 20  # a description is a few kB; a huge one is not a checkpoint
MAX_IMAGE_SIZE = 4096  # effdet's largest configs use 1536; a bigger input only exhausts memory
MAX_GROUPS = 1024  # head groups (projects or nodes)


class CheckpointError(LabelerError, RuntimeError):
    """A checkpoint cannot be used; the message names the file and says why."""


@dataclass
class Checkpoint:
    folder: Path
    model: Detector
    meta: dict[str, Any]
    sha256: str = ""  # of model.json as read: identifies the checkpoint (it pins the weights' SHA-256)

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


def confined(folder: Path, name: object, what: str, where: Path) -> Path:
    """`name` (a path written in model.json) as a file inside `folder`: relative, no `..`, and no symlink
    leading out of the folder. A checkpoint is untrusted input: its JSON must never make us open
    `/etc/passwd` or `../../other/model.safetensors`."""
    if not isinstance(name, str) or not name.strip() or "\x00" in name or len(name) > 255:
        raise CheckpointError(f"{where}: {what} must be a file name inside the checkpoint folder, got {shorten(name)}")
    parts = PurePosixPath(name.replace("\\", "/"))
    if parts.is_absolute() or PureWindowsPath(name).drive or ".." in parts.parts:
        raise CheckpointError(f"{where}: {what} {shorten(name)} lies outside the checkpoint folder "
                              "(only a name inside the folder is allowed)")
    path = folder.joinpath(*parts.parts)
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise CheckpointError(f"{path}: cannot be resolved ({e})") from e
    if not inside:
        raise CheckpointError(f"{where}: {what} {shorten(name)} is a link that leads outside the checkpoint folder")
    return path


def read_meta_and_hash(folder: str | Path) -> tuple[dict[str, Any], str]:
    """The checkpoint's description, validated, and the SHA-256 of the exact bytes it was parsed from.

    The hash identifies the checkpoint: model.json pins the weights' own SHA-256, so equal hashes mean
    the same model (same weights, same groups, same taxonomy), whatever its folder or `version` says."""
    folder = Path(folder)
    path = folder / META
    if not folder.exists():
        raise CheckpointError(f"{folder}: checkpoint folder not found (moved or deleted?)")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder (a checkpoint is a folder holding {META} and {WEIGHTS})")
    if not path.is_file():
        raise CheckpointError(f"{path}: not found (a checkpoint folder holds {META} and {WEIGHTS})")
    confined(folder, META, "the description", path)
    try:
        if path.stat().st_size > MAX_META_BYTES:
            raise CheckpointError(f"{path}: {path.stat().st_size:,} bytes, too large for a checkpoint description "
                                  f"(at most {MAX_META_BYTES:,})")
        data = path.read_bytes()
        meta = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint description ({shorten(str(e), 160)})") from e
    validate_meta(meta, path)
    return meta, hashlib.sha256(data).hexdigest()


def read_meta(folder: str | Path) -> dict[str, Any]:
    return read_meta_and_hash(folder)[0]


def _number_list(value: Any, n: int) -> bool:
    return (isinstance(value, list) and len(value) == n and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value))


def validate_meta(meta: Any, path: Path) -> None:
    """Every field the loader and the predictor read has the right type and range, and the head groups
    are tied to the checkpoint's own super-taxonomy: known nodes, each group in node order. A class head's
    column i predicts its group's node i, so a permuted `groups` list would silently swap classes
    (person boxes named vehicle); it is refused instead."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a Labeler detector checkpoint")
    fv = meta.get("format_version", 0)
    if not isinstance(fv, int) or isinstance(fv, bool):
        raise CheckpointError(f"{path}: format_version must be an integer, got {shorten(fv)}")
    if fv > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {fv} is newer than this Labeler understands "
                              f"({FORMAT_VERSION})")
    missing = [k for k in (*REQUIRED, "version", "weights") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: lacks {', '.join(missing)}")
    version = meta["version"]
    if not isinstance(version, str) or not version.strip() or len(version) > 200 or not version.isprintable():
        raise CheckpointError(f"{path}: version must be a short printable name, got {shorten(version)}")
    for key in ("model", "layout", "approach"):
        if not isinstance(meta[key], str) or not meta[key]:
            raise CheckpointError(f"{path}: {key} must be a name, got {shorten(meta[key])}")
    size = meta["image_size"]
    if not isinstance(size, int) or isinstance(size, bool) or not 32 <= size <= MAX_IMAGE_SIZE:
        raise CheckpointError(f"{path}: image_size must be an integer in 32..{MAX_IMAGE_SIZE}, got {shorten(size)}")
    weights = meta["weights"]
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: weights must be a mapping with file and sha256, got {shorten(weights)}")
    sha = weights.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise CheckpointError(f"{path}: weights.sha256 must be the weights' SHA-256 (64 hex digits), "
                              f"got {shorten(sha)}")
    norm = meta.get("normalisation")
    if norm is not None and not (isinstance(norm, dict) and _number_list(norm.get("mean"), 3)
                                 and _number_list(norm.get("std"), 3) and all(v > 0 for v in norm["std"])):
        raise CheckpointError(f"{path}: normalisation must hold mean and std, three numbers each (std > 0), "
                              f"got {shorten(norm)}")
    try:
        trained = SuperTaxonomy.from_dict(meta["super_taxonomy"], source=str(path))
    except TaxonomyError as e:
        raise CheckpointError(f"{path}: invalid super-taxonomy in checkpoint ({e})") from e
    check_groups(meta["groups"], meta["layout"], trained, path)


def check_groups(groups: Any, layout: str, sup: SuperTaxonomy, path: Path) -> list[Group]:
    """The head groups as `Group`s, or CheckpointError: each group lists known, distinct nodes in the
    super-taxonomy's order; `single` has one group of every node, `per-class` one group per node (named by
    it), `heads` distinct group names (the way inference/approaches.py writes them)."""
    if not isinstance(groups, list) or not groups or len(groups) > MAX_GROUPS:
        raise CheckpointError(f"{path}: groups must be a non-empty list of head groups, got {shorten(groups)}")
    position = {name: i for i, name in enumerate(sup.names)}
    out: list[Group] = []
    for i, g in enumerate(groups):
        if not (isinstance(g, dict) and isinstance(g.get("name"), str) and isinstance(g.get("nodes"), list)
                and g["nodes"] and all(isinstance(n, str) for n in g["nodes"])):
            raise CheckpointError(f"{path}: groups[{i}] must be {{name, nodes: [node, ...]}}, got {shorten(g)}")
        unknown = [n for n in g["nodes"] if n not in position]
        if unknown:
            raise CheckpointError(f"{path}: groups[{i}] names {shorten(unknown[0])}, not a node of the checkpoint's "
                                  "super-taxonomy")
        order = [position[n] for n in g["nodes"]]
        if any(b <= a for a, b in zip(order, order[1:])):
            raise CheckpointError(
                f"{path}: groups[{i}] ({shorten(g['name'])}) lists its nodes out of super-taxonomy order "
                f"({shorten(g['nodes'])}); the class head's columns follow that order, so this checkpoint would "
                "name its detections wrongly")
        out.append(Group.from_dict(g))
    if layout == "single" and (len(out) != 1 or list(out[0].nodes) != sup.names):
        raise CheckpointError(f"{path}: a single-layout model has one group of every super-taxonomy node in "
                              f"order ({', '.join(sup.names)}), got {shorten([g.to_dict() for g in out])}")
    if layout == "per-class":
        nodes = [g.nodes for g in out]
        if any(len(n) != 1 for n in nodes) or any(g.name != g.nodes[0] for g in out) or any(
                position[b[0]] <= position[a[0]] for a, b in zip(nodes, nodes[1:])):
            raise CheckpointError(f"{path}: a per-class model has one group per node, named by it, in "
                                  f"super-taxonomy order; got {shorten([g.to_dict() for g in out])}")
    if len({g.name for g in out}) != len(out):
        raise CheckpointError(f"{path}: two head groups share a name")
    return out


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
    """Read, verify and build the model (float32, eval mode). Raises CheckpointError naming the file.

    Verified, in order: the description (complete, typed, groups tied to its super-taxonomy), the workspace's
    super-taxonomy (when given), the weights' path (inside the folder), that the architecture builds, the
    weights' size (bounded by the model it describes), their SHA-256, that they parse as safetensors and
    that they fit the model exactly. The weights are read once, so what is hashed is what is loaded."""
    folder = Path(folder)
    meta, meta_sha = read_meta_and_hash(folder)
    where = folder / META
    if super_taxonomy is not None:
        check_taxonomy(meta, super_taxonomy, where)
    wpath = confined(folder, meta["weights"].get("file", WEIGHTS), "weights.file", where)
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: weights file not found")
    try:
        groups = check_groups(meta["groups"], meta["layout"], SuperTaxonomy.from_dict(meta["super_taxonomy"]), where)
        model = build_detector(meta["layout"], meta["model"], groups, int(meta["image_size"]), pretrained="none")
    except CheckpointError:
        raise
    except Exception as e:  # effdet/timm raise assorted errors on a config they cannot build
        raise CheckpointError(f"{where}: cannot build the model it describes ({shorten(str(e), 200)})") from e
    limit = sum(t.numel() * 4 for t in model.state_dict().values()) + (16 << 20)  # float32 + a generous header
    try:
        size = wpath.stat().st_size
        if size > limit:
            raise CheckpointError(f"{wpath}: {size:,} bytes, more than the model in {META} can hold ({limit:,})")
        data = wpath.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{wpath}: cannot be read ({e})") from e
    if hashlib.sha256(data).hexdigest() != meta["weights"]["sha256"]:
        raise CheckpointError(f"{wpath}: corrupt weights (SHA-256 differs from the one in {META})")
    try:
        state = load_bytes(data)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{wpath}: not a readable safetensors file ({shorten(str(e), 200)})") from e
    del data
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"{wpath}: weights do not fit the model in {META} ({shorten(first, 200)})") from e
    model.to(device).eval()
    return Checkpoint(folder, model, meta, meta_sha)

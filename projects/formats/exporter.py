"""Export: read one project out of the workspace and hand it to a format's writer, atomically.

The writer fills a fresh temporary folder (or file) next to OUT; only when it has finished is it
renamed to OUT, so an export that fails halfway leaves no half-written dataset that a training
pipeline could pick up by mistake.

`--overwrite` replaces only what an export wrote: a folder export carries a marker file
(`.labeler-export`), and an existing folder without it is never removed. Whatever the flag, OUT may not be,
contain or lie inside a workspace (a folder holding `labeler.sqlite`), nor hold the workspace's own images:
a typo in OUT must never delete a user's labels or pictures.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from projects.formats.common import ExportData, ExportImage, ExportLabel, TransferError
from projects.formats.registry import get_format
from projects.split import split_of
from projects.workspace import DB_NAME, Workspace

MARKER = ".labeler-export"  # written into every folder export; --overwrite replaces only folders carrying it
CHUNK = 100_000  # annotation rows converted to arrays at a time (bounded memory for 1,000,000 boxes)


@dataclass
class ExportReport:
    format: str
    out: str
    project: str
    images: int = 0
    boxes: int = 0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"exported {self.boxes} boxes on {self.images} images of {self.project!r} to {self.out} "
                f"({self.format})", *self.notes]


def export_project(ws: Workspace, project: str, format_name: str, out: str | Path, only_submitted: bool = False,
                   copy_images: bool = True, overwrite: bool = False) -> ExportReport:
    """Write `project` in `format_name` to `out` (a folder, or one file for the archive)."""
    fmt = get_format(format_name)
    out = Path(out)
    check_export_target(ws, out)
    if out.exists() and not overwrite and (out.is_file() or out.is_symlink() or any(out.iterdir())):
        raise TransferError(f"{out}: already exists; choose a new path or pass --overwrite")
    if overwrite and out.is_dir() and not out.is_symlink() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise TransferError(f"{out}: not a Labeler export (no {MARKER} file in it); --overwrite replaces only a "
                            "folder an export wrote. Remove it yourself or choose a new path")
    if out.exists() and fmt.writes_file == out.is_dir():
        kind = "a folder" if out.is_dir() else "a file"
        raise TransferError(f"{out}: is {kind}; the {format_name} export writes "
                            f"{'one file' if fmt.writes_file else 'a folder'}")
    data = export_data(ws, project, only_submitted, include_deleted=fmt.keeps_history,
                       copy_images=copy_images or fmt.keeps_history)
    if data.copy_images:
        missing = [f"{im.path}" for im in data.images if not im.path.is_file()]
        if missing:
            raise TransferError(f"{len(missing)} image files of project {project!r} are missing; "
                                "pass --no-images to export the annotations alone:\n  " + "\n  ".join(missing[:20]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    _remove(tmp)
    if not fmt.writes_file:
        tmp.mkdir()
    try:
        fmt.write(data, tmp)
        if not fmt.writes_file:
            (tmp / MARKER).write_text(json.dumps({"format": format_name, "project": project}) + "\n")
        _replace(tmp, out)
    except BaseException:
        _remove(tmp)
        raise
    report = ExportReport(format_name, str(out), project, len(data.images), len(data.boxes))
    if not data.copy_images:
        report.notes.append("images were not copied (--no-images): file names refer to the export's image folder")
    return report


def export_data(ws: Workspace, project: str, only_submitted: bool = False, include_deleted: bool = False,
                copy_images: bool = True) -> ExportData:
    """The project as arrays and small records, in the customer's label names and label order.

    Read in one transaction, so images and annotations come from the same snapshot even while the
    labeling window keeps writing.
    """
    with ws.transaction():
        return _read(ws, project, only_submitted, include_deleted, copy_images)


def _read(ws: Workspace, project: str, only_submitted: bool, include_deleted: bool, copy_images: bool) -> ExportData:
    labels_rows = ws.labels(project)
    labels = [ExportLabel(r["name"], r["node"], r["color"], r["shortcut"]) for r in labels_rows]
    sup = ws.super_taxonomy()
    needed: dict[str, None] = {}
    for lab in labels:
        for n in reversed(sup.path_to_root(lab.node)):
            needed.setdefault(n)
    nodes = [{"name": n, "parent": sup.parent[n]} for n in needed]
    rules = ws.taxonomy(project).rules
    image_rows, ann_rows = ws.project_export_rows(project, only_submitted, include_deleted)
    images = _export_images(ws, image_rows)
    image_ids = np.array([r["id"] for r in image_rows], dtype=np.int64)  # sorted: rows come ordered by id
    label_lookup = np.full(max([r["id"] for r in labels_rows], default=0) + 1, -1, dtype=np.int64)
    for i, r in enumerate(labels_rows):
        label_lookup[r["id"]] = i

    parts: list[np.ndarray] = []
    extras: list[dict[str, Any]] | None = [] if include_deleted else None
    provenance: list[str] = []
    while True:
        chunk = ann_rows.fetchmany(CHUNK) if hasattr(ann_rows, "fetchmany") else list(_take(ann_rows, CHUNK))
        if not chunk:
            break
        cols = list(zip(*chunk))  # transpose in C: one array per column, no per-row Python
        arr = np.empty((len(chunk), 6), dtype=np.float64)
        ids = np.array(cols[0], dtype=np.int64)
        arr[:, 0] = where = np.searchsorted(image_ids, ids)
        arr[:, 1] = label_lookup[np.array(cols[1], dtype=np.int64)]
        if len(image_ids) == 0 or (image_ids[np.minimum(where, len(image_ids) - 1)] != ids).any() \
                or (arr[:, 1] < 0).any():
            raise TransferError(f"project {project!r} changed while it was read; export again")
        for k in range(2, 6):
            arr[:, k] = np.array(cols[k], dtype=np.float64)
        parts.append(arr)
        provenance.extend(cols[6])
        if extras is not None:
            extras.extend({"provenance": r[6], "author": r[7], "model_version": r[8], "created_at": r[9],
                           "updated_at": r[10], "deleted_at": r[11]} for r in chunk)
    table = np.concatenate(parts) if parts else np.zeros((0, 6))
    return ExportData(project, labels, rules, nodes, images, table[:, 0].astype(np.int64),
                      table[:, 1].astype(np.int64), np.ascontiguousarray(table[:, 2:6]), extras, copy_images,
                      provenance)


def _take(it, n: int):
    for _, row in zip(range(n), it):
        yield row


def _export_images(ws: Workspace, rows: list[dict[str, Any]]) -> list[ExportImage]:
    """Each image gets a unique file name in the export: its own, or `stem_<id>.ext` when two share a stem.

    Stems must be unique (not just names): YOLO and VOC name each label file after the image's stem.
    String operations, not pathlib: this runs once per image (100,000 of them).
    """
    split_names = []
    stems: dict[str, int] = {}
    for r in rows:
        name = posixpath.basename(r["path"].replace("\\", "/"))
        stem, suffix = posixpath.splitext(name)
        split_names.append((name, stem, suffix))
        stems[stem.lower()] = stems.get(stem.lower(), 0) + 1
    out = []
    for r, (name, stem, suffix) in zip(rows, split_names):
        if stems[stem.lower()] > 1:
            name = f"{stem}_{r['id']}{suffix}"
        out.append(ExportImage(r["id"], ws.image_path(r["path"]), name, r["width"], r["height"], r["sha256"],
                               r["status"], split_of(r["split_bucket"]), r["added_at"], r["status_updated_at"]))
    return out


def check_export_target(ws: Workspace, out: Path) -> None:
    """Refuse an OUT that is, contains or lies inside a workspace, or that holds the workspace's images.

    Resolved paths, so `..`, symlinks and relative spellings of the same place are caught.
    """
    target = out.resolve()
    workspace = Path(ws.folder).resolve()
    for folder in (target, *target.parents):
        if (folder / DB_NAME).exists() or folder == workspace:
            raise TransferError(f"{out}: lies inside the workspace {folder}; export to a folder outside it")
    if target.is_dir() and not target.is_symlink():
        if workspace.is_relative_to(target):
            raise TransferError(f"{out}: contains the workspace {workspace}; export to a folder outside it")
        for root, _dirs, files in os.walk(target):
            if DB_NAME in files:
                raise TransferError(f"{out}: contains a workspace ({Path(root) / DB_NAME}); "
                                    "export to a new folder")
        inside = ws.any_image_under(target)
        if inside is not None:
            raise TransferError(f"{out}: holds the workspace's image {inside}; export to a new folder")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _replace(tmp: Path, out: Path) -> None:
    """Put the finished export at `out`, replacing what was there (only reached with --overwrite or empty)."""
    if out.is_dir() and not out.is_symlink():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        _remove(old)
    else:
        os.replace(tmp, out)

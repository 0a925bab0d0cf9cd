"""Import: read another tool's files, check everything, then write it all in one transaction.

The order is the point. Parsing, label matching, finding and probing every image and checking every
box happen first, with nothing written; a problem that must stop the import is raised then, naming
the file and the place, and the workspace is untouched. Only a plan that passed all checks is
written, inside one `ws.transaction()`, so a crash or an error halfway leaves nothing half-imported.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml

try:
    import fcntl
except ImportError:  # Windows: stale scratch folders are then found by age only
    fcntl = None

from projects.errors import LabelerError, shorten
from projects.formats.common import (
    IMAGE_SUFFIXES,
    Dataset,
    FormatError,
    ImageEntry,
    PathGuard,
    TransferError,
    confined_to,
)
from projects.formats.registry import ReadContext, get_format
from projects.imaging import ImageError, ImageInfo, file_sha256, probe_image
from projects.schema import STATUSES
from projects.taxonomy import CustomerTaxonomy, Label
from projects.untrusted import MAX_YAML_BYTES, YAMLBombError, load_yaml, read_file
from projects.workspace import Workspace, check_name_encodable, default_author, now

BAD_BOX_POLICIES = ("clamp", "skip", "error")
EXAMPLES = 20  # places kept per kind of issue in a report
TOLERANCE = 1e-3  # pixels a box may overshoot the image before it counts as outside (float noise)


@dataclass
class ImportOptions:
    images_dir: Path | None = None  # looked in first for every image the annotations name
    mapping: dict[str, str | None] | None = None  # file label -> project label (None drops its boxes)
    add_labels: bool = False  # create labels the project lacks, each mapped to the node of the same name
    skip_missing: bool = False  # skip (and report) images that cannot be found or read, with their boxes
    bad_boxes: str = "clamp"  # boxes partly outside the image: clamp, skip or error
    trust_sizes: bool = False  # take image sizes from the annotation file: hash the files, do not decode them
    status: str = "submitted"  # status of imported images (another tool's finished labels)
    author: str | None = None
    dry_run: bool = False  # check everything, write nothing
    workers: int = 2  # threads probing images (decoding releases the GIL)


@dataclass
class ImportReport:
    format: str
    source: str
    project: str
    images_added: int = 0
    images_existing: int = 0
    boxes_imported: int = 0
    labels_added: list[str] = field(default_factory=list)
    project_created: bool = False
    dry_run: bool = False
    counts: Counter[str] = field(default_factory=Counter)  # issue kind -> how many
    examples: dict[str, list[str]] = field(default_factory=dict)  # issue kind -> first places

    def issue(self, kind: str, where: str, n: int = 1) -> None:
        self.counts[kind] += n
        ex = self.examples.setdefault(kind, [])
        if len(ex) < EXAMPLES:
            ex.append(where)

    def lines(self, limit: int = 5) -> list[str]:
        """Human-readable summary: what was imported, then each kind of issue with its first places."""
        verb = "would import" if self.dry_run else "imported"
        out = [f"{verb} {self.boxes_imported} boxes on {self.images_added + self.images_existing} images "
               f"({self.images_added} new, {self.images_existing} already in the project) into {self.project!r} "
               f"from {self.source} ({self.format})"]
        if self.project_created:
            out.append(f"created project {self.project!r}")
        if self.labels_added:
            out.append(f"added labels: {', '.join(self.labels_added)}")
        for kind, n in sorted(self.counts.items()):
            out.append(f"{kind}: {n}")
            for where in self.examples.get(kind, [])[:limit]:
                out.append(f"    {where}")
            if n > limit:
                out.append(f"    ... and {n - min(limit, len(self.examples.get(kind, [])))} more")
        return out


def load_mapping(path: str | Path) -> dict[str, str | None]:
    """A label mapping file (YAML or JSON): `{name in the file: project label, or null to drop its boxes}`."""
    p = Path(path)
    try:
        data = load_yaml(read_file(p, MAX_YAML_BYTES).decode("utf-8-sig"))
    except OSError as e:
        raise TransferError(f"{p}: cannot read the mapping file ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise TransferError(f"{p}: the mapping file is not UTF-8 text") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        why = f" ({e.problem})" if isinstance(e, YAMLBombError) else ""
        raise FormatError(p, f"line {mark.line + 1}" if mark else "", f"not valid YAML/JSON{why}") from e
    if not isinstance(data, dict):
        raise FormatError(p, "", "a mapping file is a mapping {name in the file: project label}")
    out: dict[str, str | None] = {}
    for k, v in data.items():
        if v is not None and not isinstance(v, str):
            raise FormatError(p, f"key {shorten(k)}", f"expected a label name or null, got {shorten(v)}")
        out[str(k)] = v
    return out


# --- the pipeline --------------------------------------------------------------------------------
def import_annotations(ws: Workspace, project: str, format_name: str, path: str | Path,
                       options: ImportOptions | None = None) -> ImportReport:
    """Import `path` (as the other tool wrote it) into `project`; all or nothing."""
    opts = options or ImportOptions()
    if opts.bad_boxes not in BAD_BOX_POLICIES:
        raise TransferError(f"bad-box policy {opts.bad_boxes!r}: one of {', '.join(BAD_BOX_POLICIES)}")
    if opts.status not in STATUSES:
        raise TransferError(f"status {opts.status!r}: one of {', '.join(STATUSES)}")
    fmt = get_format(format_name)
    if not fmt.keeps_history:  # only the archive brings its own taxonomy to create a project with
        ws.project_id(project)  # fail before reading anything, naming the known projects
    path = Path(path)
    if not path.exists():
        raise TransferError(f"{path}: no such file or folder")
    if opts.images_dir is not None and not Path(opts.images_dir).is_dir():
        raise TransferError(f"{opts.images_dir}: --images must be a folder")
    report = ImportReport(format_name, str(path), project, dry_run=opts.dry_run)
    # Scratch inside the workspace: staged archive images move into place by rename, on one file system.
    roots = [path if path.is_dir() else path.parent] + ([Path(opts.images_dir)] if opts.images_dir else [])
    with scratch_folder(ws) as scratch, \
            confined_to([*roots, scratch], named=[] if path.is_dir() else [path]):
        ds = fmt.read(path, ReadContext(scratch=scratch, images_dir=opts.images_dir))
        for kind, n in ds.notes.items():
            for where in ds.examples.get(kind, []):
                report.issue(kind, where, 0)
            report.counts[kind] += n
        plan = _plan(ws, project, ds, opts, report)
        if opts.dry_run:  # what _apply would report; the images already there were counted by _plan
            report.boxes_imported = len(plan.boxes)
            report.images_added = len(plan.images) - report.images_existing
        else:
            _apply(ws, plan, report, scratch / JOURNAL)
    return report


# --- scratch -------------------------------------------------------------------------------------
SCRATCH_PREFIX = ".import-"
SCRATCH_LOCK = ".lock"
JOURNAL = "created.txt"  # files and folders an import created in the workspace before its commit
STALE_UNLOCKED_S = 24 * 3600  # a scratch folder without a lock file (older Labeler) this old is a leftover


@contextmanager
def scratch_folder(ws: Workspace) -> Iterator[Path]:
    """A scratch folder in the workspace, removed when the import ends, or by the next import if this one is
    killed.

    SIGKILL runs no `finally`, so a TemporaryDirectory alone leaks (an archive's staged images: gigabytes).
    The import holds an exclusive lock on a file inside its scratch folder; the kernel releases it when the
    process dies, however it dies. The next import removes every scratch folder whose lock it can take:
    one whose import is still running (another process) keeps its lock and is left alone. With it go
    the files that import had moved into the workspace but never committed (its journal)."""
    remove_stale_scratch(ws)
    path = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=ws.folder))
    lock = None
    try:
        lock = _take_lock(path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if lock is not None:
            lock.close()


def _take_lock(path: Path) -> Any:
    """Create `path/.lock` already locked (locked under a temporary name, then renamed), so that no other
    process ever sees an unlocked lock file in a live scratch folder."""
    if fcntl is None:
        return None
    tmp = path / f"{SCRATCH_LOCK}.{os.getpid()}"
    f = open(tmp, "wb")  # held open (and locked) for the whole import
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.replace(tmp, path / SCRATCH_LOCK)
    return f


def remove_stale_scratch(ws: Workspace) -> list[Path]:
    """Remove scratch folders left by killed imports, and the files they created but never committed;
    returns the folders removed. Never touches one still in use."""
    folder = ws.folder
    removed: list[Path] = []
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(SCRATCH_PREFIX) and not p.is_symlink()
                      and p.is_dir()]
    except OSError:
        return removed
    for p in candidates:
        lock_file = p / SCRATCH_LOCK
        try:
            if fcntl is not None and lock_file.is_file():
                with open(lock_file, "rb") as f:
                    try:
                        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        continue  # its import is still running
                    if not _undo_uncommitted(ws, p / JOURNAL):
                        continue
                    shutil.rmtree(p, ignore_errors=True)  # removed while we hold its lock
            elif time.time() - p.stat().st_mtime > STALE_UNLOCKED_S:
                shutil.rmtree(p, ignore_errors=True)
            else:
                continue
        except OSError:
            continue
        removed.append(p)
    return removed


def _undo_uncommitted(ws: Workspace, journal: Path) -> bool:
    """Remove what a killed import's journal lists and no image row refers to; False when that cannot be
    decided now (the workspace is busy or read-only): the scratch folder is then kept for a later import."""
    try:
        lines = journal.read_text(encoding="utf-8").splitlines() if journal.is_file() else []
    except (OSError, UnicodeDecodeError):
        return True  # nothing usable: the scratch folder itself still goes
    entries = [(kind, ws.folder / rel) for kind, _, rel in (line.partition(" ") for line in lines)
               if kind in ("file", "dir") and rel and not PurePosixPath(rel).is_absolute()
               and ".." not in PurePosixPath(rel).parts]
    if not entries:
        return True
    try:
        with ws.transaction():  # the write lock: no import can commit a row for one of these files meanwhile
            for kind, path in entries:
                if kind == "file" and ws.db.execute("SELECT 1 FROM images WHERE path=? LIMIT 1",
                                                    [ws.stored_path(path)]).fetchone() is None:
                    path.unlink(missing_ok=True)
            for kind, path in sorted(entries, key=lambda e: len(e[1].parts), reverse=True):
                if kind == "dir" and path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
    except (OSError, LabelerError, sqlite3.Error):
        return False
    return True


@dataclass
class _Plan:
    project: str
    project_exists: bool
    new_labels: list[Label]  # created before the boxes, in this order
    label_targets: list[str | None]  # per dataset label: project label name, None when dropped
    images: list[dict[str, Any]]  # rows for Workspace.bulk_import (path, sha256, width, height, status...)
    staged: list[tuple[Path, Path] | None]  # per image row: (staged file, final place) for archive images
    box_image: np.ndarray  # index into images
    box_label: np.ndarray  # index into ds.labels
    boxes: np.ndarray
    extras: list[dict[str, Any]] | None
    taxonomy: dict[str, Any] | None


def _plan(ws: Workspace, project: str, ds: Dataset, opts: ImportOptions, report: ImportReport) -> _Plan:
    exists = project in ws.project_names()
    if not exists and ds.taxonomy is None:
        ws.project_id(project)  # raises, naming the known projects
    targets, new_labels = _match_labels(ws, project if exists else None, ds, opts, report)

    # Locate and probe every image before any box is looked at.
    entry_image, infos, staged = _locate_and_probe(ws, project, ds, opts, report)
    n_boxes = len(ds)
    box_entry = np.frombuffer(ds.box_image, dtype=np.int64) if n_boxes else np.zeros(0, np.int64)
    box_label = np.frombuffer(ds.box_label, dtype=np.int64) if n_boxes else np.zeros(0, np.int64)
    boxes = ds.box_array()
    box_img = entry_image[box_entry] if n_boxes else np.zeros(0, np.int64)
    keep = box_img >= 0
    dropped_label = np.array([t is None for t in targets], dtype=bool)
    if n_boxes and dropped_label.any():
        drop = keep & dropped_label[box_label]
        for k in np.flatnonzero(drop)[:EXAMPLES]:
            report.issue("boxes dropped by the label mapping", ds.where(int(k)), 0)
        report.counts["boxes dropped by the label mapping"] += int(drop.sum())
        keep &= ~drop
    sizes = np.array([(i.width, i.height) for i in infos], dtype=np.float64).reshape(-1, 2)
    rel = np.array([e.relative for e in ds.images], dtype=bool)
    if n_boxes:
        safe_img = np.where(box_img >= 0, box_img, 0)
        wh = sizes[safe_img] if len(sizes) else np.ones((n_boxes, 2))
        scale = np.where(rel[box_entry][:, None], np.concatenate([wh, wh], axis=1), 1.0)
        boxes = boxes * scale
        keep &= _check_boxes(boxes, wh, keep, ds, opts.bad_boxes, report)
    idx = np.flatnonzero(keep)

    rows = []
    for info, extra in zip(infos, _image_extras(ds, entry_image, len(infos))):
        rows.append({"path": info.path, "sha256": info.sha256, "width": info.width, "height": info.height,
                     "status": extra.get("status") or opts.status, "added_at": extra.get("added_at"),
                     "status_updated_at": extra.get("status_updated_at")})
    idx = idx[_repeated_on_merged(idx, box_img, box_entry, box_label, boxes, targets, entry_image, ds, report)]
    if exists:
        idx = idx[_not_yet_there(ws, project, rows, box_img, box_label, boxes, idx, targets, ds, report)]
    if exists:  # (a project created from an archive gets the archive's whole taxonomy)
        new_labels = _labels_with_boxes(new_labels, targets, ds, box_label[idx], report)
    extras = [ds.box_extra[k] for k in idx] if ds.box_extra is not None else None
    return _Plan(project, exists, new_labels, targets, rows, staged, box_img[idx], box_label[idx], boxes[idx],
                 extras, ds.taxonomy)


def _image_extras(ds: Dataset, entry_image: np.ndarray, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for e, i in zip(ds.images, entry_image):
        if i >= 0 and e.extra and not out[i]:
            out[i] = e.extra
    return out


# --- labels --------------------------------------------------------------------------------------
def _match_labels(ws: Workspace, project: str | None, ds: Dataset, opts: ImportOptions,
                  report: ImportReport) -> tuple[list[str | None], list[Label]]:
    """Each dataset label's project label (None: dropped by the mapping), and the labels to create."""
    node_of = {lab["name"]: lab["node"] for lab in ws.labels(project)} if project else {}
    have = set(node_of)
    archive_labels = {lab["name"]: lab for lab in (ds.taxonomy or {}).get("labels", [])}
    for name, lab in archive_labels.items():
        if name in node_of and node_of[name] != lab["node"]:
            report.issue("labels mapped to another node in the archive than in this project (the project's kept)",
                         f"{name}: archive {lab['node']!r}, project {node_of[name]!r}")
    creating = ds.taxonomy is not None and project is None  # a new project built from an archive
    used = np.bincount(np.frombuffer(ds.box_label, dtype=np.int64), minlength=len(ds.labels)) if len(ds) else \
        np.zeros(len(ds.labels), dtype=np.int64)
    mapping = opts.mapping or {}
    targets: list[str | None] = []
    new: dict[str, Label] = {}
    unknown: list[str] = []
    for i, name in enumerate(ds.labels):
        target = mapping[name] if name in mapping else name
        targets.append(target)
        if target is None or target in have or target in new:
            continue
        if target in archive_labels and (creating or opts.add_labels):
            a = archive_labels[target]
            new[target] = Label(target, a["node"], a.get("color") or "#e6194b", a.get("shortcut"))
        elif opts.add_labels:
            new[target] = Label(target, target, "")  # "": the workspace picks a palette colour
        elif used[i] or creating:
            unknown.append(name)
    if creating:  # every label of the archived taxonomy, used or not, in its order
        ordered = [Label(a["name"], a["node"], a.get("color") or "#e6194b", a.get("shortcut"))
                   for a in archive_labels.values()]
        new = {lab.name: lab for lab in ordered} | new
        unknown = [u for u in unknown if (mapping.get(u, u)) not in new]
    if unknown:
        lower = {h.lower(): h for h in have}
        position = {name: i for i, name in enumerate(ds.labels)}
        parts = []
        for name in unknown[:EXAMPLES]:  # a file may name 100,000 labels, each as long as it likes
            hint = f"; did you mean {lower[name.lower()]!r}?" if name.lower() in lower else ""
            parts.append(f"{shorten(name, 80)} ({used[position[name]]} boxes{hint})")
        if len(unknown) > EXAMPLES:
            parts.append(f"... and {len(unknown) - EXAMPLES} more")
        known = ", ".join(sorted(have)) or "none"
        raise TransferError(f"{ds.source}: labels not in project {report.project!r}: {', '.join(parts)}. "
                            f"Project labels: {known}. Map them with --map FILE or create them with --add-labels.")
    report.labels_added = [lab.name for lab in new.values()] if not creating else []
    return targets, list(new.values())


def _labels_with_boxes(new_labels: list[Label], targets: list[str | None], ds: Dataset, imported: np.ndarray,
                       report: ImportReport) -> list[Label]:
    """The labels to create: an import is all or nothing, so a label comes with the boxes that use it.

    A label some imported box uses is created; one the file only lists (CVAT <meta>, COCO categories,
    YOLO names: unused classes keep their place, so class ids survive a round trip) comes along when
    any box is imported. A label whose boxes were all skipped (missing images, bad boxes) is not
    created: with --skip-missing and nothing found, the project is left exactly as it was.
    """
    if not new_labels:
        return new_labels
    in_file = np.bincount(np.frombuffer(ds.box_label, dtype=np.int64), minlength=len(ds.labels)) if len(ds) else \
        np.zeros(len(ds.labels), dtype=np.int64)
    used = {targets[i] for i in np.unique(imported).tolist()}
    listed_only = {targets[i] for i in range(len(ds.labels)) if not in_file[i]}
    keep = [lab for lab in new_labels if lab.name in used or (len(imported) and lab.name in listed_only)]
    for lab in new_labels:
        if lab not in keep:
            report.issue("labels not created (no box that uses them was imported)", lab.name)
    report.labels_added = [lab.name for lab in keep]
    return keep


# --- images --------------------------------------------------------------------------------------
def _candidates(entry: ImageEntry, images_dir: Path | None) -> list[tuple[Path, str]]:
    """(root, relative name) pairs to try for an entry, in order; every one stays inside its root.

    A relative name is tried under --images and the entry's roots, then its bare file name under
    --images. A name that is absolute or climbs with `..` is only ever looked up by its file name.
    """
    name = entry.name.replace("\\", "/")
    roots = ([images_dir] if images_dir else []) + list(entry.roots)
    base = posixpath.basename(name)
    pairs = [(r, base) for r in roots] if _unsafe(name) else \
        [(r, name) for r in roots] + ([(images_dir, base)] if images_dir and base != name else [])
    out: list[tuple[Path, str]] = []
    for root, n in pairs:
        if posixpath.splitext(n)[1] in IMAGE_SUFFIXES:
            out.append((root, n))
        else:  # COCO files often name images without their extension
            out.extend([(root, n), *((root, n + s) for s in IMAGE_SUFFIXES)])
    return out


def _unsafe(name: str) -> bool:
    name = name.replace("\\", "/")
    return name.startswith("/") or bool(re.match(r"^[A-Za-z]:", name)) or ".." in name.split("/")


def _find(entry: ImageEntry, images_dir: Path | None, guard: PathGuard) -> Path | None:
    for root, name in _candidates(entry, images_dir):
        try:
            p = guard.join(root, name, entry.source, entry.place)
        except FormatError:
            continue  # e.g. a symlink out of the root: never a candidate
        if os.path.isfile(p):
            return p
    return None


def _locate_and_probe(ws: Workspace, project: str, ds: Dataset, opts: ImportOptions, report: ImportReport
                      ) -> tuple[np.ndarray, list[ImageInfo], list[tuple[Path, Path] | None]]:
    """Map each entry to a unique probed image (or -1 when skipped); report what is missing or odd."""
    images_dir = Path(opts.images_dir) if opts.images_dir else None
    paths: list[Path | None] = []
    missing: list[str] = []
    guard = PathGuard()
    for e in ds.images:
        if e.path is None and _unsafe(e.name):
            report.issue("image paths that were absolute or left their folder: looked up by file name only",
                         f"{e.source}: {e.place}: {_cut(e.name)}")
        p = e.path or _find(e, images_dir, guard)
        paths.append(p)
        if p is None:
            missing.append(f"{e.source}: {e.place}: {_cut(e.name)}")
    if missing and not opts.skip_missing:
        where = f"--images {images_dir} and " if images_dir else ""
        raise TransferError(f"{len(missing)} images named in the annotations cannot be found (looked in {where}the "
                            f"annotation folders); pass --skip-missing to import the rest:\n  "
                            + "\n  ".join(missing[:EXAMPLES]) + (f"\n  ... and {len(missing) - EXAMPLES} more"
                                                                 if len(missing) > EXAMPLES else ""))
    for m in missing:
        report.issue("images not found, skipped with their boxes", m)

    unique: dict[str, int] = {}
    order: list[int] = []  # entry index of each unique image
    entry_unique = np.full(len(ds.images), -1, dtype=np.int64)
    for i, p in enumerate(paths):
        if p is None:
            continue
        key = guard.real(p)
        if key in unique:
            report.issue("images named more than once (their boxes are merged)",
                         f"{ds.images[i].source}: {ds.images[i].place}: {_cut(ds.images[i].name)}")
        else:
            unique[key] = len(order)
            order.append(i)
        entry_unique[i] = unique[key]

    def probe(i: int) -> ImageInfo | str:
        e, p = ds.images[i], paths[i]
        try:
            check_name_encodable(p)  # the workspace stores paths as text
            if opts.trust_sizes and e.width and e.height and not e.extra.get("sha256"):
                return ImageInfo(p, _sha256(p), int(e.width), int(e.height))
            return probe_image(p)
        except ImageError as err:
            return f"{e.source}: {e.place}: {err}" if e.place else f"{e.source}: {err}"

    workers = max(1, opts.workers)
    step = max(1, -(-len(order) // (workers * 8)))  # a few big chunks: one future per image costs more than a hash
    chunks = [order[k:k + step] for k in range(0, len(order), step)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = [r for chunk in pool.map(lambda c: [probe(i) for i in c], chunks) for r in chunk]
    bad = [r for r in results if isinstance(r, str)]
    if bad and not opts.skip_missing:
        raise TransferError(f"{len(bad)} images cannot be read; pass --skip-missing to import the rest:\n  "
                            + "\n  ".join(bad[:EXAMPLES])
                            + (f"\n  ... and {len(bad) - EXAMPLES} more" if len(bad) > EXAMPLES else ""))
    remap = np.full(len(order), -1, dtype=np.int64)
    infos: list[ImageInfo] = []
    staged: list[tuple[Path, Path] | None] = []
    dest_dir = ws.folder / "images" / _safe_name(project)
    taken: set[str] = set()
    same: dict[tuple[str, str], int] = {}  # (file name, sha256) -> index in infos
    for u, (i, r) in enumerate(zip(order, results)):
        if isinstance(r, str):
            report.issue("unreadable images, skipped with their boxes", r)
            continue
        e = ds.images[i]
        # One picture listed in several places (a CVAT project's subsets, copies in two folders): same file
        # name and same bytes are one image, not two copies that split its boxes.
        key = (PurePosixPath(e.name.replace("\\", "/")).name, r.sha256)
        if key in same:
            remap[u] = same[key]
            report.issue("images with the same name and content in several places (imported once)",
                         f"{e.source}: {e.place}: {e.name}")
            continue
        same[key] = len(infos)
        want = e.extra.get("sha256")
        if want and want != r.sha256:
            raise FormatError(e.source, e.place, f"image {e.name}: content does not match its recorded sha256")
        if e.width and e.height and (e.width, e.height) != (r.width, r.height):
            swapped = " (width and height swapped: EXIF orientation?)" if (e.width, e.height) == (r.height, r.width) \
                else ""
            report.issue("images whose real size differs from the size the file states (real size used)",
                         f"{e.source}: {e.place}: {e.name}: file says {e.width}x{e.height}, image is "
                         f"{r.width}x{r.height}{swapped}")
        if e.extra.get("staged"):
            name = e.extra.get("dest_name") or PurePosixPath(e.name.replace("\\", "/")).name
            final = _unique_dest(dest_dir, name, r.sha256, taken)
            staged.append((r.path, final))
            r = ImageInfo(final, r.sha256, r.width, r.height)
        else:
            staged.append(None)
        remap[u] = len(infos)
        infos.append(r)
    entry_image = np.where(entry_unique >= 0, remap[np.maximum(entry_unique, 0)], -1) if len(order) else entry_unique
    return entry_image, infos, staged


def _cut(name: str, limit: int = 200) -> str:
    """An image name from an annotation file, for a report line: as is when short, else cut."""
    return name if len(name) <= limit else shorten(name, limit)


def _sha256(path: Path) -> str:
    """Regular files only, within the byte cap (a FIFO named like an image must not block the import)."""
    return file_sha256(path)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "project"


def _unique_dest(folder: Path, name: str, sha256: str, taken: set[str]) -> Path:
    """Where a staged archive image goes: its own name, unless another file already holds it."""
    stem, suffix = os.path.splitext(_safe_name(name))
    for k in range(1_000_000):
        candidate = f"{stem}{suffix}" if k == 0 else f"{stem}_{k}{suffix}"
        p = folder / candidate
        if candidate in taken:
            continue
        if not p.exists() or _sha256(p) == sha256:
            taken.add(candidate)
            return p
    raise TransferError(f"{folder}: no free file name for {name}")


# --- boxes ---------------------------------------------------------------------------------------
def _check_boxes(boxes: np.ndarray, wh: np.ndarray, alive: np.ndarray, ds: Dataset, policy: str,
                 report: ImportReport) -> np.ndarray:
    """Keep-mask after the box checks; clamps `boxes` in place when the policy says so."""
    x1, y1, x2, y2 = boxes.T
    finite = np.isfinite(boxes).all(axis=1)
    with np.errstate(invalid="ignore"):
        reversed_ = finite & ((x2 < x1) | (y2 < y1))
        zero = finite & ~reversed_ & ((x2 == x1) | (y2 == y1))
        outside = finite & ~reversed_ & ~zero & ((x1 < -TOLERANCE) | (y1 < -TOLERANCE) | (x2 > wh[:, 0] + TOLERANCE)
                                                 | (y2 > wh[:, 1] + TOLERANCE))
    keep = finite & ~reversed_ & ~zero
    kinds = [("boxes with NaN or infinite coordinates, skipped", ~finite),
             ("boxes with reversed corners, skipped", reversed_),
             ("zero-area boxes, skipped", zero)]
    if policy == "error":
        bad = alive & (~keep | outside)
        if bad.any():
            lines = [f"{ds.where(int(k))}: {_describe(boxes[k], wh[k])}" for k in np.flatnonzero(bad)[:EXAMPLES]]
            raise TransferError(f"{int(bad.sum())} invalid boxes (--bad-boxes error):\n  " + "\n  ".join(lines))
    # Snap float noise at the edges and clamp; a box left with no area inside the image is skipped.
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, wh[:, [0]])
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, wh[:, [1]])
    with np.errstate(invalid="ignore"):
        emptied = keep & outside & ((boxes[:, 2] - boxes[:, 0] <= TOLERANCE) | (boxes[:, 3] - boxes[:, 1] <= TOLERANCE))
    if policy == "skip":
        kinds.append(("boxes outside the image, skipped", outside))
        keep &= ~outside
    else:
        kinds.append(("boxes entirely outside the image, skipped", emptied))
        kinds.append(("boxes partly outside the image, clamped", outside & ~emptied))
        keep &= ~emptied
    for kind, mask in kinds:
        mask = mask & alive
        n = int(mask.sum())
        if n:
            report.counts[kind] += n
            ex = report.examples.setdefault(kind, [])
            for k in np.flatnonzero(mask)[:EXAMPLES]:
                ex.append(ds.where(int(k)))
    return keep


def _describe(box: np.ndarray, wh: np.ndarray) -> str:
    return f"box ({', '.join(f'{v:g}' for v in box)}) in a {int(wh[0])}x{int(wh[1])} image"


def _repeated_on_merged(idx: np.ndarray, box_img: np.ndarray, box_entry: np.ndarray, box_label: np.ndarray,
                        boxes: np.ndarray, targets: list[str | None], entry_image: np.ndarray, ds: Dataset,
                        report: ImportReport) -> np.ndarray:
    """Keep-mask over `idx`: when several entries name one image (a CVAT project lists an image in each
    subset), a box that another of those entries already gave it is imported once, not once per entry."""
    keep = np.ones(len(idx), dtype=bool)
    named = entry_image[entry_image >= 0]
    if not len(named) or len(np.unique(named)) == len(named):
        return keep
    multi = set(np.flatnonzero(np.bincount(named) > 1).tolist())
    first: dict[tuple, int] = {}
    for j, k in enumerate(idx.tolist()):
        image = int(box_img[k])
        if image not in multi:
            continue
        key = (image, targets[box_label[k]], *(round(float(v), 3) for v in boxes[k]))
        entry = int(box_entry[k])
        if first.setdefault(key, entry) != entry:
            keep[j] = False
            report.issue("boxes repeated by an image listed more than once (imported once)", ds.where(k))
    return keep


def _not_yet_there(ws: Workspace, project: str, rows: list[dict[str, Any]], box_img: np.ndarray,
                   box_label: np.ndarray, boxes: np.ndarray, idx: np.ndarray, targets: list[str | None],
                   ds: Dataset, report: ImportReport) -> np.ndarray:
    """Importing the same file twice must not double every box: boxes already on an image are left out."""
    pid = ws.project_id(project)
    keep = np.ones(len(idx), dtype=bool)
    if not ws.image_ids(project):
        return keep
    stored = {ws.stored_path(Path(r["path"])): i for i, r in enumerate(rows)}
    existing = {path: iid for path, iid in ws.db.execute("SELECT path, id FROM images WHERE project_id=?", [pid])
                if path in stored}
    report.images_existing = len(existing)
    if existing:
        have: set[tuple] = set()
        for path, iid in existing.items():
            for a in ws.annotations(iid):
                have.add((stored[path], a["label"], round(a["x1"], 3), round(a["y1"], 3), round(a["x2"], 3),
                          round(a["y2"], 3)))
        for j, k in enumerate(idx):
            key = (int(box_img[k]), targets[box_label[k]], *(round(float(v), 3) for v in boxes[k]))
            if key in have:
                keep[j] = False
                report.issue("boxes already in the project, not duplicated", ds.where(int(k)))
    return keep


# --- writing -------------------------------------------------------------------------------------
def _apply(ws: Workspace, plan: _Plan, report: ImportReport, journal: Path | None = None) -> None:
    """Write the checked plan: one transaction; staged archive images move into place inside it.

    Each file and folder created in the workspace is first written to `journal` (in the scratch folder),
    so that when this process is killed before the commit, the next import removes them (see
    remove_stale_scratch): the rows roll back by themselves, the files need the journal."""
    moved: list[Path] = []
    new_dirs: list[Path] = []
    author = default_author()
    t = now()
    log = open(journal, "a", encoding="utf-8") if journal is not None else None
    try:
        with ws.transaction():
            if not plan.project_exists:
                tax = plan.taxonomy or {}
                _ensure_nodes(ws, tax.get("nodes", []))
                ws.add_project(plan.project, CustomerTaxonomy(plan.new_labels, tax.get("rules") or {},
                                                              name=plan.project, source=report.source))
                report.project_created = True
            else:
                for lab in plan.new_labels:
                    ws.ensure_node(lab.node)
                    ws.add_label(plan.project, lab.name, lab.node, lab.color or None)
            label_ids = {lab["name"]: lab["id"] for lab in ws.labels(plan.project)}
            # (-1: dropped by the mapping, or a label not created because none of its boxes is imported)
            lid = np.array([label_ids.get(t, -1) if t is not None else -1 for t in plan.label_targets], dtype=np.int64)
            models = {m["version"]: m["id"] for m in ws.models(include_removed=True)}
            for pair in plan.staged:
                if pair is not None and not pair[1].exists():
                    folder = pair[1].parent
                    created = [d for d in (folder, *folder.parents) if not d.exists()]
                    new_dirs += created
                    if log is not None:
                        log.writelines([*(f"dir {_relative(ws, d)}\n" for d in created),
                                        f"file {_relative(ws, pair[1])}\n"])
                        log.flush()  # in the page cache before the move: a SIGKILL cannot lose it
                    folder.mkdir(parents=True, exist_ok=True)
                    os.replace(pair[0], pair[1])
                    moved.append(pair[1])
            rows = _annotation_columns(plan, lid, models, author, t, report)
            pid = ws.project_id(plan.project)
            before = {r[0] for r in ws.db.execute("SELECT id FROM images WHERE project_id=?", [pid])}
            ids = ws.bulk_import(pid, plan.images, rows)
            report.images_added = len(set(ids) - before)
            report.images_existing = len(set(ids) & before)
            report.boxes_imported = len(plan.boxes)
    except BaseException:
        for p in moved:
            p.unlink(missing_ok=True)
        for d in sorted(set(new_dirs), key=lambda d: len(d.parts), reverse=True):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    finally:
        if log is not None:
            log.close()


def _relative(ws: Workspace, path: Path) -> str:
    return path.relative_to(ws.folder).as_posix()


def _annotation_columns(plan: _Plan, lid: np.ndarray, models: dict[str, int], author: str, t: str,
                        report: ImportReport) -> dict[str, Any]:
    """The plan's boxes as columns for Workspace.bulk_import (one value where every row shares it)."""
    cols: dict[str, Any] = {"image": plan.box_image.tolist(), "label_id": lid[plan.box_label].tolist()}
    for k, name in enumerate(("x1", "y1", "x2", "y2")):
        cols[name] = plan.boxes[:, k].tolist()
    if plan.extras is None:
        return cols | {"provenance": "imported", "author": author, "model_id": None, "created_at": t,
                       "updated_at": t, "deleted_at": None}
    lost: Counter[str] = Counter()
    model_ids = []
    for ex in plan.extras:
        version = ex.get("model_version")
        model_ids.append(models.get(version) if version else None)
        if version and version not in models:
            lost[version] += 1
    for version, n in lost.items():
        kind = "annotations whose model version is not in this workspace (model link dropped)"
        report.issue(kind, f"model {version!r}: {n} annotations", 0)
        report.counts[kind] += n
    return cols | {"provenance": [ex.get("provenance") or "imported" for ex in plan.extras],
                   "author": [ex.get("author") or author for ex in plan.extras], "model_id": model_ids,
                   "created_at": [ex.get("created_at") or t for ex in plan.extras],
                   "updated_at": [ex.get("updated_at") or t for ex in plan.extras],
                   "deleted_at": [ex.get("deleted_at") for ex in plan.extras]}


def _ensure_nodes(ws: Workspace, nodes: list[dict[str, Any]]) -> None:
    """Create the archived super-taxonomy nodes this workspace lacks, parents first."""
    have = ws.node_ids()
    for n in nodes:
        if n["name"] not in have:
            ws.ensure_node(n["name"], n.get("parent"))

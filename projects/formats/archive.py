"""The portable project archive: one zip with the project's taxonomy, images and annotations with provenance.

It carries what the other formats drop, so that importing it into another workspace loses nothing:
labels with their super-taxonomy nodes (and the nodes' parents), colours, shortcuts and labeling rules;
each image's bytes, content hash, status and timestamps; every annotation with its provenance, author,
model version, timestamps and soft deletion. `manifest.json` holds all but the image bytes.

Reading an archive is reading untrusted input: entry names that are absolute, climb with `..`, hold
backslashes or drive letters, symlink entries and duplicates are refused; sizes are capped (entries,
total bytes, compression ratio) and enforced while streaming, since a zip header can lie; only the
entries the manifest names are extracted, each checked against its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from projects.errors import shorten
from projects.formats.common import (
    MAX_INTEGER,
    Dataset,
    ExportData,
    FormatError,
    ImageEntry,
    PathGuard,
    TransferError,
    number,
)
from projects.formats.registry import Format, ReadContext, register
from projects.schema import PROVENANCES, STATUSES
from projects.untrusted import open_regular

MANIFEST = "manifest.json"
KIND = "labeler-project-archive"
VERSION = 1


@dataclass(frozen=True)
class Limits:
    """Caps against zip bombs; generous for real projects (JPEGs barely compress, JSON ~10x)."""

    max_entries: int = 2_000_000
    max_total_bytes: int = 64 << 30  # uncompressed, all entries
    max_manifest_bytes: int = 4 << 30
    max_ratio: float = 200.0  # uncompressed / compressed, for every entry (so for the whole archive too)


LIMITS = Limits()


@register
class Archive(Format):
    name = "archive"
    description = "Labeler project archive (.zip): taxonomy, images, annotations with provenance"
    keeps_history = True
    writes_file = True

    def __init__(self, limits: Limits = LIMITS):
        self.limits = limits

    def read(self, path: Path, ctx: ReadContext) -> Dataset:
        if ctx.scratch is None:
            raise TransferError("reading an archive needs a scratch folder")
        return read_archive(path, ctx.scratch / "archive", self.limits)

    def write(self, data: ExportData, out: Path) -> None:
        write_archive(data, out)


# --- writing -------------------------------------------------------------------------------------
def write_archive(data: ExportData, out: Path) -> None:
    images = [{"file": f"images/{im.name}", "sha256": im.sha256, "width": im.width, "height": im.height,
               "status": im.status, "added_at": im.added_at, "status_updated_at": im.status_updated_at}
              for im in data.images]
    extras = data.box_extra or [{} for _ in range(len(data.boxes))]
    annotations = [[int(i), int(lab), *box, ex.get("provenance"), ex.get("author"), ex.get("model_version"),
                    ex.get("created_at"), ex.get("updated_at"), ex.get("deleted_at")]
                   for i, lab, box, ex in zip(data.box_image.tolist(), data.box_label.tolist(), data.boxes.tolist(),
                                              extras)]
    manifest = {
        "kind": KIND, "version": VERSION, "project": data.project,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "taxonomy": {"labels": [{"name": lab.name, "node": lab.node, "color": lab.color, "shortcut": lab.shortcut}
                                for lab in data.labels],
                     "rules": data.rules, "nodes": data.nodes},
        "images": images,
        "annotation_fields": ["image", "label", "x1", "y1", "x2", "y2", "provenance", "author", "model_version",
                              "created_at", "updated_at", "deleted_at"],
        "annotations": annotations,
    }
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as z:
        z.writestr(MANIFEST, json.dumps(manifest, ensure_ascii=False))
        for im, entry in zip(data.images, images):
            z.write(im.path, entry["file"], compress_type=zipfile.ZIP_STORED)  # images are compressed already


# --- reading -------------------------------------------------------------------------------------
def read_archive(path: Path, staging: Path, limits: Limits = LIMITS) -> Dataset:
    try:
        f = open_regular(path)
    except OSError as e:
        raise FormatError(path, "", f"cannot read ({e.strerror or e})") from e
    with f:
        try:
            z = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise FormatError(path, "", f"not a readable zip archive ({e})") from e
        with z:
            return _read_entries(z, path, staging, limits)


def _read_entries(z: zipfile.ZipFile, path: Path, staging: Path, limits: Limits) -> Dataset:
    infos = _checked_entries(z, path, limits)
    if MANIFEST not in infos:
        raise FormatError(path, "", f"no {MANIFEST}: not a Labeler project archive")
    raw = _read_entry(z, infos[MANIFEST], path, limits.max_manifest_bytes, limits)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise FormatError(f"{path}!{MANIFEST}", "", f"not valid JSON ({e})") from e
    except ValueError as e:  # an integer of more than 4300 digits
        raise FormatError(f"{path}!{MANIFEST}", "", f"not valid JSON ({str(e).split(':')[0][:120]})") from e
    ds = _parse_manifest(manifest, f"{path}!{MANIFEST}")
    staging.mkdir(parents=True, exist_ok=True)
    guard = PathGuard()
    left = [limits.max_total_bytes - infos[MANIFEST].file_size]  # bytes still allowed out, counted as written
    for k, entry in enumerate(ds.images):
        where = f"$.images[{k}].file"
        info = infos.get(entry.name)
        if info is None:
            raise FormatError(f"{path}!{MANIFEST}", where, f"{shorten(entry.name)} is not in the archive")
        target = guard.join(staging, entry.name, path, where)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = _extract(z, info, target, path, left)
        if digest != entry.extra["sha256"]:
            raise FormatError(path, entry.name, "content does not match the sha256 in the manifest (corrupt)")
        entry.path = target
    return ds


def _checked_entries(z: zipfile.ZipFile, path: Path, limits: Limits) -> dict[str, zipfile.ZipInfo]:
    infos = z.infolist()
    if len(infos) > limits.max_entries:
        raise FormatError(path, "", f"{len(infos)} entries, more than the limit of {limits.max_entries}")
    total = 0
    out: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        if name.startswith(("/", "\\")) or "\\" in name or re.match(r"^[A-Za-z]:", name) or "\x00" in name \
                or ".." in PurePosixPath(name).parts:
            raise FormatError(path, name, "unsafe entry name (absolute, '..', backslash or drive): refused")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise FormatError(path, name, "symlink entries are refused")
        if name in out:
            raise FormatError(path, name, "the same entry name appears twice")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise FormatError(path, name, f"uncompressed size over the limit of {limits.max_total_bytes} bytes")
        if info.file_size > limits.max_ratio * max(info.compress_size, 1):  # every entry: 200 small bombs are one
            raise FormatError(path, name, f"compression ratio over {limits.max_ratio:g} (a zip bomb?): refused")
        out[name] = info
    return out


def _stream(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, cap: int):
    """Yield an entry's bytes, stopping at its declared size or `cap`: a lying header cannot inflate us."""
    limit = min(info.file_size, cap)
    if info.file_size > cap:
        raise FormatError(path, info.filename, f"entry of {info.file_size} bytes is over the limit of {cap}")
    read = 0
    try:
        with z.open(info) as f:
            while chunk := f.read(1 << 20):
                read += len(chunk)
                if read > limit:
                    raise FormatError(path, info.filename, "entry is larger than its header says: refused")
                yield chunk
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise FormatError(path, info.filename, f"cannot extract ({e})") from e


def _read_entry(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, cap: int, limits: Limits) -> bytes:
    return b"".join(_stream(z, info, path, cap))


def _extract(z: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, path: Path, left: list[int]) -> str:
    """Write one entry to `target`; `left[0]`, the bytes the archive may still write, shrinks by what is written."""
    h = hashlib.sha256()
    with open(target, "wb") as out:
        for chunk in _stream(z, info, path, max(left[0], 0)):
            left[0] -= len(chunk)
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest()


def _str(v: Any, src: str, where: str, optional: bool = True) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise FormatError(src, where, f"expected text, got {v!r:.60}")
    return v


def _parse_manifest(m: Any, src: str) -> Dataset:
    if not isinstance(m, dict) or m.get("kind") != KIND:
        raise FormatError(src, "$.kind", f"not a Labeler project archive (expected kind {KIND!r})")
    if m.get("version") != VERSION:
        raise FormatError(src, "$.version",
                          f"archive version {shorten(m.get('version'))}; this Labeler reads {VERSION}")
    tax = m.get("taxonomy")
    if not isinstance(tax, dict):
        raise FormatError(src, "$.taxonomy", "missing")
    nodes, seen = [], set()
    for k, n in enumerate(tax.get("nodes") or []):
        where = f"$.taxonomy.nodes[{k}]"
        if not isinstance(n, dict) or not isinstance(n.get("name"), str) or not n["name"]:
            raise FormatError(src, where, "expected {name, parent}")
        parent = _str(n.get("parent"), src, f"{where}.parent")
        if parent is not None and parent not in seen:
            raise FormatError(src, f"{where}.parent", f"parent {shorten(parent)} must come before {shorten(n['name'])}")
        seen.add(n["name"])
        nodes.append({"name": n["name"], "parent": parent})
    labels = []
    for k, lab in enumerate(tax.get("labels") or []):
        where = f"$.taxonomy.labels[{k}]"
        if not isinstance(lab, dict) or not isinstance(lab.get("name"), str) or not isinstance(lab.get("node"), str):
            raise FormatError(src, where, "expected {name, node, color, shortcut}")
        if lab["node"] not in seen:
            raise FormatError(src, f"{where}.node", f"node {shorten(lab['node'])} is not in taxonomy.nodes")
        labels.append({"name": lab["name"], "node": lab["node"], "color": _str(lab.get("color"), src, where),
                       "shortcut": _str(lab.get("shortcut"), src, where)})
    rules = tax.get("rules") or {}
    if not isinstance(rules, dict):
        raise FormatError(src, "$.taxonomy.rules", "expected a mapping")
    ds = Dataset(src, box_place_format="$.annotations[{}]")
    ds.taxonomy = {"labels": labels, "rules": rules, "nodes": nodes}
    for lab in labels:
        ds.label_index(lab["name"])
    images = m.get("images")
    if not isinstance(images, list):
        raise FormatError(src, "$.images", "missing or not a list")
    files = set()
    for k, im in enumerate(images):
        where = f"$.images[{k}]"
        if not isinstance(im, dict):
            raise FormatError(src, where, "expected an object")
        file = _str(im.get("file"), src, f"{where}.file", optional=False)
        sha = _str(im.get("sha256"), src, f"{where}.sha256", optional=False)
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise FormatError(src, f"{where}.sha256", "expected 64 lowercase hex digits")
        if file in files:
            raise FormatError(src, f"{where}.file", f"{shorten(file)} listed twice")
        files.add(file)
        status = im.get("status")
        if status not in STATUSES:
            raise FormatError(src, f"{where}.status", f"expected one of {', '.join(STATUSES)}, got {status!r:.40}")
        w, h = im.get("width"), im.get("height")
        if not (isinstance(w, int) and isinstance(h, int) and 0 < w <= MAX_INTEGER and 0 < h <= MAX_INTEGER):
            raise FormatError(src, where, "width and height must be positive whole numbers (up to 2**63 - 1)")
        extra = {"sha256": sha, "status": status, "staged": True,
                 "added_at": _str(im.get("added_at"), src, f"{where}.added_at"),
                 "status_updated_at": _str(im.get("status_updated_at"), src, f"{where}.status_updated_at")}
        ds.add_image(ImageEntry(file, src, where, (), w, h, extra=extra))
    anns = m.get("annotations")
    if not isinstance(anns, list):
        raise FormatError(src, "$.annotations", "missing or not a list")
    n_labels, n_images = len(labels), len(images)
    for k, a in enumerate(anns):
        where = f"$.annotations[{k}]"
        if not isinstance(a, list) or len(a) != 12:
            raise FormatError(src, where, "expected the 12 fields of annotation_fields")
        img, lab = a[0], a[1]
        if not (isinstance(img, int) and 0 <= img < n_images):
            raise FormatError(src, f"{where}[0]", f"image index {img!r:.20} out of range")
        if not (isinstance(lab, int) and 0 <= lab < n_labels):
            raise FormatError(src, f"{where}[1]", f"label index {lab!r:.20} out of range")
        coords = a[2:6]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in coords):
            raise FormatError(src, f"{where}[2:6]", "box corners must be numbers")
        coords = [number(v, src, f"{where}[{2 + j}]") for j, v in enumerate(coords)]  # 10**400 is refused
        if a[6] not in PROVENANCES:
            raise FormatError(src, f"{where}[6]", f"unknown provenance {a[6]!r:.40}")
        fields = [_str(v, src, f"{where}[{7 + j}]") for j, v in enumerate(a[7:])]
        extra = dict(zip(("author", "model_version", "created_at", "updated_at", "deleted_at"), fields))
        extra["provenance"] = a[6]
        ds.add_box(img, labels[lab]["name"], *coords, k, extra)
    return ds

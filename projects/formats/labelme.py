"""labelme JSON: one file per image with `shapes` (label, points, shape_type) and `imagePath`.

Read: rectangles are boxes, stored as two corners in any order (labelme) or as four (X-AnyLabeling 2.2+
writes tl, tr, br, bl; a 4-point rectangle that is not axis-aligned becomes its bounding box, counted, as
X-AnyLabeling itself saves it); polygons, circles and X-AnyLabeling's `rotation` and `quadrilateral`
shapes become their bounding box and are counted; lines, line strips, points, cuboids and masks are not
boxes and are counted as skipped. Per-shape extras (`visible`, `difficult`, `score`, `attributes`,
`kie_linking`) do not matter: a shape hidden in the other tool's view is still an annotation. A file
whose image is not on disk but that embeds it (`imageData`, base64, line-wrapped or not) gets that image
written into the workspace, named after `imagePath` (or the JSON when it names none) with the suffix of
its real format. Files without a `version` field (older labelme) read the same. Write: `OUT/<stem>.json`
beside `OUT/<image>`, as labelme saves them (`imageData` null, `imagePath` the file name, rectangles as
two corners, which labelme reads and X-AnyLabeling converts to its four on load), and `OUT/labels.txt`,
the label list both tools take with `--labels`; read back when present, it keeps the label order.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from pathlib import Path, PurePosixPath
from typing import Any

from projects.errors import shorten
from projects.formats.common import (
    Dataset,
    ExportData,
    FormatError,
    ImageEntry,
    PathGuard,
    copy_image,
    integer,
    number,
    polygon_box,
    read_json,
    read_text,
)
from projects.formats.registry import Format, ReadContext, register

LABELME_VERSION = "5.5.0"
LABELS = "labels.txt"


@register
class Labelme(Format):
    name = "labelme"
    description = "labelme JSON, one file per image (rectangles; polygons and circles become boxes)"

    def read(self, path: Path, ctx: ReadContext) -> Dataset:
        files = [path] if path.is_file() else sorted(path.rglob("*.json"))
        if not files:
            raise FormatError(path, "", "no labelme .json files here")
        ds = Dataset(path)
        labels = (path.parent if path.is_file() else path) / LABELS
        if labels.is_file():  # `labelme --labels labels.txt`: the declared order is the label order
            for line in read_text(labels).splitlines():
                if line.strip() and line.strip() not in ("__ignore__", "_background_"):
                    ds.label_index(line.strip())
        guard = PathGuard()
        for f in files:
            read_labelme_file(ds, f, read_json(f), ctx, guard)
        return ds

    def write(self, data: ExportData, out: Path) -> None:
        for i, im in enumerate(data.images):
            shapes = []
            for k in data.boxes_of(i):
                x1, y1, x2, y2 = data.boxes[k].tolist()
                shapes.append({"label": data.labels[data.box_label[k]].name, "points": [[x1, y1], [x2, y2]],
                               "group_id": None, "description": "", "shape_type": "rectangle", "flags": {}})
            doc = {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": im.name,
                   "imageData": None, "imageHeight": im.height, "imageWidth": im.width}
            (out / f"{PurePosixPath(im.name).stem}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False),
                                                                    encoding="utf-8")
            if data.copy_images:
                copy_image(im.path, out / im.name)
        # the label list labelme and X-AnyLabeling take with --labels; it keeps the label order on re-import
        (out / LABELS).write_text("".join(lab.name + "\n" for lab in data.labels), encoding="utf-8")


def read_labelme_file(ds: Dataset, f: Path, doc: Any, ctx: ReadContext, guard: PathGuard) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise FormatError(f, "$", "expected a labelme object with shapes and imagePath")
    name = doc.get("imagePath")
    embedded = doc.get("imageData")
    if (name is None or name == "") and embedded:
        name = f.stem  # the image lives only in imageData: it is named after the JSON (suffix from its bytes)
    if not isinstance(name, str) or not name.strip():
        raise FormatError(f, "$.imagePath", f"expected the image's file name, got {name!r:.60}")
    # X-AnyLabeling writes -1 for a size it does not know: not stated, like 0.
    w = integer(doc["imageWidth"], f, "$.imageWidth") if doc.get("imageWidth") is not None else None
    h = integer(doc["imageHeight"], f, "$.imageHeight") if doc.get("imageHeight") is not None else None
    entry = ImageEntry(name, str(f), "$.imagePath", (f.parent,), w if w and w > 0 else None,
                       h if h and h > 0 else None)
    if embedded:
        _maybe_embedded(entry, embedded, f, ctx, guard, ds)
    img = ds.add_image(entry)
    for k, s in enumerate(doc["shapes"]):
        place = f"$.shapes[{k}]"
        if not isinstance(s, dict):
            raise FormatError(f, place, "expected an object with label, points and shape_type")
        label = s.get("label")
        if not isinstance(label, str) or not label:
            raise FormatError(f, f"{place}.label", f"expected a label name, got {label!r:.60}")
        kind = s.get("shape_type") or "polygon"  # labelme's default when the key is absent
        pts = s.get("points")
        if not isinstance(pts, list) or not all(isinstance(p, list) and len(p) == 2 for p in pts) or not pts:
            raise FormatError(f, f"{place}.points", "expected [[x, y], ...]")
        xy = [(number(p[0], f, f"{place}.points[{j}][0]"), number(p[1], f, f"{place}.points[{j}][1]"))
              for j, p in enumerate(pts)]
        if kind == "rectangle":
            # labelme writes two opposite corners; X-AnyLabeling (since 2.2) all four, tl, tr, br, bl.
            if len(xy) not in (2, 4):
                raise FormatError(f, f"{place}.points", f"a rectangle has 2 corners (labelme) or 4 (X-AnyLabeling), "
                                                        f"got {len(xy)} points")
            box = polygon_box([p[0] for p in xy], [p[1] for p in xy])
            if len(xy) == 4 and not _axis_aligned(xy):
                # X-AnyLabeling itself saves any 4-point rectangle as the bounding box of its points.
                ds.note("4-point rectangles that were not axis-aligned: their bounding box used", f"{f}: {place}")
        elif kind in ("polygon", "rotation", "quadrilateral"):
            box = polygon_box([p[0] for p in xy], [p[1] for p in xy])
            what = {"polygon": "polygons", "rotation": "rotated rectangles (X-AnyLabeling 'rotation')",
                    "quadrilateral": "quadrilaterals (X-AnyLabeling)"}[kind]
            ds.note(f"{what} converted to their bounding box", f"{f}: {place}")
        elif kind == "circle":
            if len(xy) != 2:
                raise FormatError(f, f"{place}.points", f"a circle has 2 points (centre, rim), got {len(xy)}")
            (cx, cy), (px, py) = xy
            r = math.hypot(px - cx, py - cy)  # `** 2` raises OverflowError past 1e154
            box = (cx - r, cy - r, cx + r, cy + r)
            ds.note("circles converted to their bounding box", f"{f}: {place}")
        else:
            ds.note(f"labelme {shorten(kind, 60)} shapes (not boxes), skipped", f"{f}: {place}")
            continue
        ds.add_box(img, label, *box, place)


def _maybe_embedded(entry: ImageEntry, data: Any, f: Path, ctx: ReadContext, guard: PathGuard, ds: Dataset) -> None:
    """Use the embedded image when the named file is not on disk (under --images or beside the JSON)."""
    base = PurePosixPath(entry.name.replace("\\", "/")).name
    for root, name in ((ctx.images_dir, base), (f.parent, entry.name), (f.parent, base)):
        if root is None:
            continue
        try:
            if guard.join(root, name, f, "$.imagePath").is_file():
                return
        except FormatError:
            continue
    if not isinstance(data, str):
        raise FormatError(f, "$.imageData", "expected base64 text")
    try:
        # Old labelme (base64.encodestring) wraps the text every 76 characters: whitespace is not data.
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise FormatError(f, "$.imageData", f"not valid base64 ({e})") from e
    if ctx.scratch is None:
        raise FormatError(f, "$.imageData", "embedded image but nowhere to put it")
    folder = ctx.scratch / "labelme" / str(len(ds.images))
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = PurePosixPath(base).stem or f.stem, PurePosixPath(base).suffix
    # labelme re-encodes all but JPEGs as PNG (a .bmp named image holds PNG bytes): name the file by its content.
    real = _suffix_of(raw)
    if real and suffix.lower() not in _SAME_FORMAT.get(real, (real,)):
        suffix = real
    target = folder / f"{stem}{suffix or '.png'}"
    target.write_bytes(raw)
    entry.path = target
    entry.extra["staged"] = True
    entry.extra["dest_name"] = target.name
    ds.note("images taken from the JSON's embedded imageData (file not found) and stored in the workspace",
            f"{f}: $.imageData")


_SAME_FORMAT = {".jpg": (".jpg", ".jpeg", ".jpe"), ".tif": (".tif", ".tiff")}


def _suffix_of(raw: bytes) -> str | None:
    """The file suffix of an image's bytes (by their magic number), None when not a format we read."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if raw.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if raw.startswith(b"BM"):
        return ".bmp"
    if raw.startswith((b"II*\x00", b"MM\x00*")):
        return ".tif"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return ".webp"
    return None


def _axis_aligned(xy: list[tuple[float, float]], tol: float = 1e-6) -> bool:
    """Every point of a 4-point rectangle on a corner of its bounding box, all four corners used."""
    x1, y1, x2, y2 = polygon_box([p[0] for p in xy], [p[1] for p in xy])
    corners = {(x, y) for x in (x1, x2) for y in (y1, y2)}
    snapped = set()
    for x, y in xy:
        cx = x1 if abs(x - x1) <= tol else x2 if abs(x - x2) <= tol else None
        cy = y1 if abs(y - y1) <= tol else y2 if abs(y - y2) <= tol else None
        if cx is None or cy is None:
            return False
        snapped.add((cx, cy))
    return snapped == corners

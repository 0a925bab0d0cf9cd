"""labelme JSON: one file per image with `shapes` (label, points, shape_type) and `imagePath`.

Read: rectangles (two corners, in any order) are boxes; polygons and circles become their bounding box
and are counted; lines, points and masks are not boxes and are counted as skipped. A file whose image is
not on disk but that embeds it (`imageData`, base64) gets that image written into the workspace. Files
without a `version` field (older labelme) read the same. Write: `OUT/<stem>.json` beside `OUT/<image>`,
as labelme saves them (`imageData` null, `imagePath` the file name).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path, PurePosixPath
from typing import Any

from projects.formats.common import (
    Dataset,
    ExportData,
    FormatError,
    ImageEntry,
    PathGuard,
    copy_image,
    integer,
    number,
    read_json,
)
from projects.formats.registry import Format, ReadContext, register

LABELME_VERSION = "5.5.0"


@register
class Labelme(Format):
    name = "labelme"
    description = "labelme JSON, one file per image (rectangles; polygons and circles become boxes)"

    def read(self, path: Path, ctx: ReadContext) -> Dataset:
        files = [path] if path.is_file() else sorted(path.rglob("*.json"))
        if not files:
            raise FormatError(path, "", "no labelme .json files here")
        ds = Dataset(path)
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


def read_labelme_file(ds: Dataset, f: Path, doc: Any, ctx: ReadContext, guard: PathGuard) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise FormatError(f, "$", "expected a labelme object with shapes and imagePath")
    name = doc.get("imagePath")
    if not isinstance(name, str) or not name.strip():
        raise FormatError(f, "$.imagePath", f"expected the image's file name, got {name!r:.60}")
    w = integer(doc["imageWidth"], f, "$.imageWidth") if doc.get("imageWidth") is not None else None
    h = integer(doc["imageHeight"], f, "$.imageHeight") if doc.get("imageHeight") is not None else None
    entry = ImageEntry(name, str(f), "$.imagePath", (f.parent,), w or None, h or None)
    if doc.get("imageData"):
        _maybe_embedded(entry, doc["imageData"], f, ctx, guard, ds)
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
            if len(xy) != 2:
                raise FormatError(f, f"{place}.points", f"a rectangle has 2 points, got {len(xy)}")
            (ax, ay), (bx, by) = xy
            box = (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))
        elif kind == "polygon":
            box = (min(p[0] for p in xy), min(p[1] for p in xy), max(p[0] for p in xy), max(p[1] for p in xy))
            ds.note("polygons converted to their bounding box", f"{f}: {place}")
        elif kind == "circle":
            if len(xy) != 2:
                raise FormatError(f, f"{place}.points", f"a circle has 2 points (centre, rim), got {len(xy)}")
            (cx, cy), (px, py) = xy
            r = ((px - cx) ** 2 + (py - cy) ** 2) ** 0.5
            box = (cx - r, cy - r, cx + r, cy + r)
            ds.note("circles converted to their bounding box", f"{f}: {place}")
        else:
            ds.note(f"labelme {kind!r} shapes (not boxes), skipped", f"{f}: {place}")
            continue
        ds.add_box(img, label, *box, place)


def _maybe_embedded(entry: ImageEntry, data: Any, f: Path, ctx: ReadContext, guard: PathGuard, ds: Dataset) -> None:
    """Use the embedded image when the named file is not on disk (under --images or beside the JSON)."""
    base = PurePosixPath(entry.name.replace("\\", "/")).name
    for root, name in ((ctx.images_dir, base), (f.parent, entry.name)):
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
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise FormatError(f, "$.imageData", f"not valid base64 ({e})") from e
    if ctx.scratch is None:
        raise FormatError(f, "$.imageData", "embedded image but nowhere to put it")
    folder = ctx.scratch / "labelme" / str(len(ds.images))
    folder.mkdir(parents=True, exist_ok=True)
    stem = PurePosixPath(base).stem or f.stem
    target = folder / f"{stem}{PurePosixPath(base).suffix or '.png'}"
    target.write_bytes(raw)
    entry.path = target
    entry.extra["staged"] = True
    ds.note("images taken from the JSON's embedded imageData (file not found) and stored in the workspace",
            f"{f}: $.imageData")

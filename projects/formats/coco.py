"""COCO JSON (object detection): `[x, y, w, h]` boxes in pixels, 1-based category ids.

Reading tolerates what real exporters write: `file_name` with or without a folder or an extension,
missing `width`/`height`, unused categories, `iscrowd` regions (skipped and counted: they mark crowds,
not objects). Writing produces `OUT/annotations.json` with images in `OUT/images/` (pass
`OUT/images` as the image root to pycocotools, detectron2 or torchvision).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from projects.errors import shorten
from projects.formats.common import Dataset, ExportData, FormatError, ImageEntry, copy_image, integer, number, read_json
from projects.formats.registry import Format, ReadContext, register

ANNOTATIONS = "annotations.json"


@register
class Coco(Format):
    name = "coco"
    description = "COCO JSON detection: images, annotations with [x, y, w, h], categories (ids from 1)"

    def read(self, path: Path, ctx: ReadContext) -> Dataset:
        file = _find_json(path)
        data = read_json(file)
        return parse_coco(data, file)

    def write(self, data: ExportData, out: Path) -> None:
        write_coco(data, out / ANNOTATIONS, image_dir="images")


def _find_json(path: Path) -> Path:
    if path.is_file():
        return path
    for name in (ANNOTATIONS, "instances_default.json", "_annotations.coco.json", "result.json"):
        if (path / name).is_file():
            return path / name
    found = sorted(path.glob("*.json")) or sorted(path.glob("annotations/*.json"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FormatError(path, "", "no COCO .json file in this folder")
    raise FormatError(path, "", f"several .json files here ({', '.join(p.name for p in found[:5])}); name one")


def _list(data: dict, key: str, file: Path, required: bool = True) -> list:
    value = data.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise FormatError(file, f"$.{key}", "missing or not a list")
    return value


def parse_coco(data: Any, file: Path) -> Dataset:
    """A parsed COCO document as a Dataset; every error names `$.path[index].field`."""
    if not isinstance(data, dict):
        raise FormatError(file, "$", "expected a JSON object with images, annotations and categories")
    images, annotations = _list(data, "images", file), _list(data, "annotations", file, required=False)
    categories = _list(data, "categories", file)
    ds = Dataset(file, box_place_format="$.annotations[{}]", int_places=True)
    label_of: dict[Any, int] = {}
    for i, c in enumerate(categories):
        where = f"$.categories[{i}]"
        if not isinstance(c, dict):
            raise FormatError(file, where, "expected an object with id and name")
        cid = integer(c.get("id"), file, f"{where}.id")
        name = c.get("name")
        if not isinstance(name, str) or not name.strip():
            raise FormatError(file, f"{where}.name", f"expected a non-empty name, got {shorten(name)}")
        if cid in label_of:
            raise FormatError(file, f"{where}.id", f"duplicate category id {cid}")
        label_of[cid] = ds.label_index(name.strip())
    roots = (file.parent, file.parent / "images")
    image_of: dict[Any, int] = {}
    names: dict[str, int] = {}
    for i, im in enumerate(images):
        where = f"$.images[{i}]"
        if not isinstance(im, dict):
            raise FormatError(file, where, "expected an object with id and file_name")
        iid = integer(im.get("id"), file, f"{where}.id")
        name = im.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise FormatError(file, f"{where}.file_name", f"expected a file name, got {shorten(name)}")
        if iid in image_of:
            raise FormatError(file, f"{where}.id", f"duplicate image id {iid}")
        if name in names:
            raise FormatError(file, f"{where}.file_name", f"{shorten(name)} already listed at $.images[{names[name]}]")
        names[name] = i
        w = integer(im["width"], file, f"{where}.width") if im.get("width") is not None else None
        h = integer(im["height"], file, f"{where}.height") if im.get("height") is not None else None
        image_of[iid] = ds.add_image(ImageEntry(name, str(file), where, roots, w or None, h or None))
    # The hot loop (1,000,000 annotations): plain appends; anything unusual goes to _annotation().
    b_img, b_lab, coords, places = ds.box_image.append, ds.box_label.append, ds.coords.extend, ds.box_place.append
    for i, a in enumerate(annotations):
        try:
            img, lab, bbox = image_of[a["image_id"]], label_of[a["category_id"]], a["bbox"]
            x, y, w, h = bbox
            if a.get("iscrowd") or not (type(x) in (int, float) and type(y) in (int, float)
                                        and type(w) in (int, float) and type(h) in (int, float)):
                raise TypeError
            coords((x, y, x + w, y + h))  # OverflowError for an integer like 10**400
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            del ds.coords[4 * len(ds.box_image):]  # an overflow can leave part of a box behind
            _annotation(ds, a, i, file, image_of, label_of)
            continue
        b_img(img)
        b_lab(lab)
        places(i)
    return ds


def _annotation(ds: Dataset, a: Any, i: int, file: Path, image_of: dict, label_of: dict) -> None:
    """The slow path: an annotation the fast loop did not take, added or explained precisely."""
    where = f"$.annotations[{i}]"
    if not isinstance(a, dict):
        raise FormatError(file, where, "expected an object with image_id, category_id and bbox")
    for key, table in (("image_id", image_of), ("category_id", label_of)):
        if key not in a:
            raise FormatError(file, f"{where}.{key}", "missing")
        try:
            table[a[key]]
        except (KeyError, TypeError):
            raise FormatError(file, f"{where}.{key}", f"no {key.split('_')[0]} with id {shorten(a[key])}") from None
    bbox = a.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise FormatError(file, f"{where}.bbox", f"expected [x, y, width, height], got {bbox!r:.60}")
    x, y, w, h = (number(v, file, f"{where}.bbox[{j}]") for j, v in enumerate(bbox))
    if a.get("iscrowd"):
        ds.note("crowd regions (iscrowd=1), skipped", f"{file}: {where}")
        return
    ds.box_image.append(image_of[a["image_id"]])
    ds.box_label.append(label_of[a["category_id"]])
    ds.coords.extend((x, y, x + w, y + h))
    ds.box_place.append(i)


def write_coco(data: ExportData, file: Path, image_dir: str | None = "images") -> None:
    """Write COCO JSON, streaming annotations in chunks (C-speed encoding, bounded memory)."""
    folder = file.parent
    images = []
    for i, im in enumerate(data.images):
        images.append({"id": i + 1, "file_name": im.name, "width": im.width, "height": im.height})
        if data.copy_images and image_dir is not None:
            copy_image(im.path, folder / image_dir / im.name)
    categories = [{"id": k + 1, "name": lab.name, "supercategory": lab.node} for k, lab in enumerate(data.labels)]
    head = {"info": {"description": f"Labeler export of project {data.project}", "version": "1.0"},
            "licenses": [], "images": images, "categories": categories}
    text = json.dumps(head, ensure_ascii=False)
    with open(file, "w", encoding="utf-8") as f:
        f.write(text[:-1] + ', "annotations": [')
        step = 50_000
        for start in range(0, len(data.boxes), step):
            b = data.boxes[start:start + step]
            x, y = b[:, 0], b[:, 1]
            w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
            rows = [{"id": i, "image_id": img, "category_id": cat, "bbox": [bx, by, bw, bh], "area": a, "iscrowd": 0,
                     "segmentation": []}
                    for i, img, cat, bx, by, bw, bh, a in zip(
                        range(start + 1, start + len(b) + 1), (data.box_image[start:start + step] + 1).tolist(),
                        (data.box_label[start:start + step] + 1).tolist(), x.tolist(), y.tolist(), w.tolist(),
                        h.tolist(), (w * h).tolist())]
            chunk = json.dumps(rows, ensure_ascii=False)[1:-1]
            f.write(chunk if start == 0 else ", " + chunk)
        f.write("]}\n")

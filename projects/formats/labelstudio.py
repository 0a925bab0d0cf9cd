"""Label Studio JSON export: a list of tasks, each with `data.image` and annotations whose results are
rectangles in percent of the image size.

Read: one annotation per task is used, the most recently updated one that was not cancelled (a task
labeled by two annotators would otherwise get every box twice); how many tasks had several is
reported. `rectanglelabels` results (or a `rectangle` plus a `labels` result sharing an id) become boxes;
rotated rectangles (Label Studio rotates about the top-left corner) and polygons become their bounding
box, counted. Image URLs such as `/data/upload/3/8f2a-img.jpg` are looked up by their file name under
--images or the JSON's folder. Write: `OUT/result.json` in the same shape, images in `OUT/images/`, and a
`labeling_config.xml` for a Label Studio project with these labels; a `labeling_config.xml` beside the
JSON on import gives the label order (so class ids survive a round trip).
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse
from xml.sax.saxutils import quoteattr

from projects.errors import shorten
from projects.formats.common import (
    Dataset,
    ExportData,
    FormatError,
    ImageEntry,
    copy_image,
    finite_number,
    number,
    parse_xml,
    read_json,
)
from projects.formats.registry import Format, ReadContext, register

RESULT = "result.json"
CONFIG = "labeling_config.xml"


@register
class LabelStudio(Format):
    name = "labelstudio"
    description = "Label Studio JSON export (rectangles in percent; the latest annotation per task)"

    def read(self, path: Path, ctx: ReadContext) -> Dataset:
        file = path / RESULT if path.is_dir() else path
        if not file.is_file():
            raise FormatError(path, "", f"no {RESULT} in this folder")
        return parse_labelstudio(read_json(file), file, config_labels(file.parent / CONFIG))

    def write(self, data: ExportData, out: Path) -> None:
        write_labelstudio(data, out)


def _image_ref(task: dict, f: Path, where: str) -> str:
    data = task.get("data")
    if not isinstance(data, dict):
        raise FormatError(f, f"{where}.data", "missing: a task needs data with its image")
    value = data.get("image")
    if value is None:
        strings = [v for v in data.values() if isinstance(v, str) and PurePosixPath(urlparse(v).path).suffix]
        if len(strings) != 1:
            raise FormatError(f, f"{where}.data", "no 'image' key and no single image-like value")
        value = strings[0]
    if not isinstance(value, str) or not value.strip():
        raise FormatError(f, f"{where}.data.image", f"expected an image path or URL, got {value!r:.60}")
    if value.startswith("data:"):
        raise FormatError(f, f"{where}.data.image", "embedded data: URLs are not supported; export with files")
    parsed = urlparse(value)
    if parsed.scheme or value.startswith("/"):
        query = parsed.query
        if query.startswith("d="):  # /data/local-files/?d=folder/img.jpg
            return PurePosixPath(unquote(query[2:])).name
        return PurePosixPath(unquote(parsed.path)).name
    return value


def _pick_annotation(task: dict, f: Path, where: str, ds: Dataset) -> tuple[int, dict] | None:
    anns = task.get("annotations", task.get("completions", []))
    if not isinstance(anns, list):
        raise FormatError(f, f"{where}.annotations", "expected a list")
    live = []
    for j, a in enumerate(anns):
        if not isinstance(a, dict):
            raise FormatError(f, f"{where}.annotations[{j}]", "expected an object")
        if not a.get("was_cancelled"):
            live.append((j, a))
    if len(live) > 1:
        ds.note("tasks with several annotations (the most recently updated one was used)", f"{f}: {where}")
    if not live:
        return None
    return max(live, key=lambda ja: (str(ja[1].get("updated_at") or ja[1].get("created_at") or ""), ja[0]))


def config_labels(config: Path) -> list[str]:
    """The `<Label value>`s of a Label Studio labeling config beside the export, in order (none if absent)."""
    if not config.is_file():
        return []
    root = parse_xml(config)
    names = [el.get("value", "").strip() for el in root.iter("Label")]
    return list(dict.fromkeys(n for n in names if n))


def parse_labelstudio(data: Any, f: Path, labels: list[str] | None = None) -> Dataset:
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise FormatError(f, "$", "expected a list of Label Studio tasks")
    ds = Dataset(f)
    for name in labels or []:  # the labeling config's order is the label order
        ds.label_index(name)
    roots = (f.parent, f.parent / "images")
    for i, task in enumerate(data):
        where = f"$[{i}]"
        if not isinstance(task, dict):
            raise FormatError(f, where, "expected a task object")
        name = _image_ref(task, f, where)
        picked = _pick_annotation(task, f, where, ds)
        results = []
        if picked is not None:
            j, ann = picked
            results = ann.get("result", [])
            if not isinstance(results, list):
                raise FormatError(f, f"{where}.annotations[{j}].result", "expected a list")
            where = f"{where}.annotations[{j}]"
        w, h = _stated_size(results, f, where)
        img = ds.add_image(ImageEntry(name, str(f), f"$[{i}].data.image", roots, w, h, relative=True))
        _results(ds, img, results, f, where, w, h)
    return ds


def _stated_size(results: list, f: Path, where: str) -> tuple[int | None, int | None]:
    for k, r in enumerate(results):
        if isinstance(r, dict) and r.get("original_width") and r.get("original_height"):
            w = finite_number(r["original_width"], f, f"{where}.result[{k}].original_width")
            h = finite_number(r["original_height"], f, f"{where}.result[{k}].original_height")
            if w > 0 and h > 0 and w == int(w) and h == int(h):
                return int(w), int(h)
    return None, None


def _results(ds: Dataset, img: int, results: list, f: Path, where: str, w: int | None, h: int | None) -> None:
    labels_by_id: dict[str, list[str]] = {}
    for r in results:
        if isinstance(r, dict) and r.get("type") == "labels" and isinstance(r.get("value"), dict):
            labels_by_id[str(r.get("id"))] = r["value"].get("labels") or []
    for k, r in enumerate(results):
        place = f"{where}.result[{k}]"
        if not isinstance(r, dict):
            raise FormatError(f, place, "expected an object")
        kind, value = r.get("type"), r.get("value")
        if kind == "labels":
            continue
        if not isinstance(value, dict):
            raise FormatError(f, f"{place}.value", "missing")
        if kind in ("rectanglelabels", "rectangle"):
            names = value.get("rectanglelabels") if kind == "rectanglelabels" else labels_by_id.get(str(r.get("id")))
            box = _rectangle(value, f, place, w, h, ds)
        elif kind == "polygonlabels":
            names = value.get("polygonlabels")
            pts = value.get("points")
            if not isinstance(pts, list) or not pts or not all(isinstance(p, list) and len(p) == 2 for p in pts):
                raise FormatError(f, f"{place}.value.points", "expected [[x, y], ...] in percent")
            xs = [number(p[0], f, f"{place}.value.points") for p in pts]
            ys = [number(p[1], f, f"{place}.value.points") for p in pts]
            box = (min(xs) / 100, min(ys) / 100, max(xs) / 100, max(ys) / 100)
            ds.note("polygons converted to their bounding box", f"{f}: {place}")
        else:
            ds.note(f"Label Studio results of type {shorten(kind, 60)} (not boxes), skipped", f"{f}: {place}")
            continue
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise FormatError(f, f"{place}.value", f"no label for this {kind} result")
        if len(names) > 1:
            ds.note("results with several labels (one box per label)", f"{f}: {place}")
        for n in names:
            ds.add_box(img, n, *box, place)


def _rectangle(value: dict, f: Path, place: str, w: int | None, h: int | None, ds: Dataset) -> tuple[float, ...]:
    x, y, bw, bh = (number(value.get(k), f, f"{place}.value.{k}") for k in ("x", "y", "width", "height"))
    angle = finite_number(value.get("rotation") or 0, f, f"{place}.value.rotation")
    if not angle % 360:
        return x / 100, y / 100, (x + bw) / 100, (y + bh) / 100
    if not (w and h):
        raise FormatError(f, place, "a rotated rectangle needs original_width and original_height")
    # Label Studio rotates about the top-left corner, in pixels (percent axes are not the same length).
    px, py, pw, ph = x * w / 100, y * h / 100, bw * w / 100, bh * h / 100
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    xs = [px + dx * c - dy * s for dx, dy in ((0, 0), (pw, 0), (pw, ph), (0, ph))]
    ys = [py + dx * s + dy * c for dx, dy in ((0, 0), (pw, 0), (pw, ph), (0, ph))]
    ds.note("rotated rectangles converted to their axis-aligned bounding box", f"{f}: {place}")
    return min(xs) / w, min(ys) / h, max(xs) / w, max(ys) / h


def write_labelstudio(data: ExportData, out: Path) -> None:
    tasks = []
    for i, im in enumerate(data.images):
        result = []
        for k in data.boxes_of(i):
            x1, y1, x2, y2 = data.boxes[k].tolist()
            result.append({
                "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{data.project}/{im.id}/{k}").hex[:10],
                "type": "rectanglelabels", "from_name": "label", "to_name": "image",
                "original_width": im.width, "original_height": im.height, "image_rotation": 0,
                "origin": "manual",
                "value": {"x": 100 * x1 / im.width, "y": 100 * y1 / im.height, "width": 100 * (x2 - x1) / im.width,
                          "height": 100 * (y2 - y1) / im.height, "rotation": 0,
                          "rectanglelabels": [data.labels[data.box_label[k]].name]}})
        tasks.append({"id": i + 1, "data": {"image": f"images/{im.name}"},
                      "annotations": [{"id": i + 1, "result": result, "was_cancelled": False,
                                       "ground_truth": False}], "predictions": []})
        if data.copy_images:
            copy_image(im.path, out / "images" / im.name)
    (out / RESULT).write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    labels = "".join(f"    <Label value={quoteattr(lab.name)} background={quoteattr(lab.color or '#e6194b')}/>\n"
                     for lab in data.labels)
    (out / CONFIG).write_text(
        '<View>\n  <Image name="image" value="$image"/>\n  <RectangleLabels name="label" toName="image">\n'
        f"{labels}  </RectangleLabels>\n</View>\n", encoding="utf-8")

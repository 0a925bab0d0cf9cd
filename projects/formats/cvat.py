"""CVAT for images 1.1 XML: `<image name width height>` elements holding `<box xtl ytl xbr ybr>` shapes.

Read: labels come from `<meta>` (so unused labels are known too); rotated boxes (`rotation`, degrees
clockwise about the box centre), polygons, polylines, points and ellipses become their bounding box,
counted in the report; masks, skeletons, cuboids and image tags are not boxes and are counted as
skipped; a shape with an empty label is skipped and counted (the rest of the file still imports). A
project export (`<image ... subset="Train" task_id="3">`) keeps each subset's images in
`images/<subset>/`, where they are looked for first: two tasks' `frame_000000.jpg` are two images. A file
with `<track>` elements is "CVAT for video", which this reader refuses by name.
Write: `OUT/annotations.xml` with images in `OUT/images/`; a box's `source` says where it came from
(manual, auto for accepted pre-labels, semi-auto for adjusted or refined ones, file for imported).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET  # writing only; parsing goes through defusedxml
from datetime import UTC, datetime
from pathlib import Path
from xml.etree.ElementTree import Element

from projects.errors import shorten
from projects.formats.common import (
    Dataset,
    ExportData,
    FormatError,
    ImageEntry,
    PathGuard,
    copy_image,
    finite_number,
    integer,
    number,
    parse_xml,
    polygon_box,
)
from projects.formats.registry import Format, ReadContext, register

ANNOTATIONS = "annotations.xml"
POINT_SHAPES = ("polygon", "polyline", "points")
NOT_BOXES = ("mask", "skeleton", "cuboid", "tag")
SOURCE_OF = {"manual": "manual", "prelabel_accepted": "auto", "prelabel_adjusted": "semi-auto",
             "refined": "semi-auto", "imported": "file"}


@register
class Cvat(Format):
    name = "cvat"
    description = "CVAT for images 1.1 XML (boxes; polygons and rotated boxes become bounding boxes)"

    def read(self, path: Path, ctx: ReadContext) -> Dataset:
        file = path / ANNOTATIONS if path.is_dir() else path
        if not file.is_file():
            raise FormatError(path, "", f"no {ANNOTATIONS} in this folder")
        return parse_cvat(parse_xml(file), file)

    def write(self, data: ExportData, out: Path) -> None:
        tree = ET.ElementTree(cvat_element(data))
        ET.indent(tree)
        tree.write(out / ANNOTATIONS, encoding="utf-8", xml_declaration=True)
        if data.copy_images:
            for im in data.images:
                copy_image(im.path, out / "images" / im.name)


def parse_cvat(root: Element, f: Path) -> Dataset:
    if root.tag != "annotations":
        raise FormatError(f, f"<{root.tag}>", "expected a CVAT <annotations> root element")
    if root.find("track") is not None:
        raise FormatError(f, "annotations/track", "this is CVAT for video (tracks); export 'CVAT for images 1.1'")
    ds = Dataset(f)
    for lab in root.iterfind("meta//labels/label"):
        name = lab.findtext("name")
        if name and name.strip():
            ds.label_index(name.strip())
    roots = (f.parent, f.parent / "images")
    guard = PathGuard()
    subset_roots: dict[str, tuple[Path, ...]] = {}
    for i, im in enumerate(root.iterfind("image"), start=1):
        where = f"annotations/image[{i}]"
        name = im.get("name")
        if not name:
            raise FormatError(f, where, "missing name attribute")
        w = integer(im.get("width"), f, f"{where}/@width") if im.get("width") else None
        h = integer(im.get("height"), f, f"{where}/@height") if im.get("height") else None
        subset = (im.get("subset") or "").strip()  # a project export: each task's images in images/<subset>/
        if subset and subset not in subset_roots:
            subset_roots[subset] = (_subset_folder(subset, f, f"{where}/@subset", guard), *roots)
        img = ds.add_image(ImageEntry(name, str(f), where, subset_roots[subset] if subset else roots, w or None,
                                      h or None))
        counts: dict[str, int] = {}
        for shape in im:
            counts[shape.tag] = counts.get(shape.tag, 0) + 1
            place = f"{where}/{shape.tag}[{counts[shape.tag]}]"
            _shape(ds, img, shape, f, place)
    return ds


def _shape(ds: Dataset, img: int, shape: Element, f: Path, place: str) -> None:
    if shape.tag in NOT_BOXES:
        ds.note(f"CVAT {shape.tag} shapes (not boxes), skipped", f"{f}: {place}")
        return
    if shape.tag not in ("box", "ellipse", *POINT_SHAPES):
        ds.note(f"unknown CVAT elements <{shape.tag}>, skipped", f"{f}: {place}")
        return
    label = (shape.get("label") or "").strip()
    if not label:  # nothing to name it by: reported with its place, the rest of the file still imports
        ds.note("CVAT shapes without a label, skipped", f"{f}: {place}")
        return
    attr = lambda k: number(shape.get(k), f, f"{place}/@{k}")
    if shape.tag == "box":
        x1, y1, x2, y2 = attr("xtl"), attr("ytl"), attr("xbr"), attr("ybr")
        angle = finite_number(shape.get("rotation") or 0, f, f"{place}/@rotation")
        if angle % 360:
            x1, y1, x2, y2 = _rotated_bounds(x1, y1, x2, y2, angle)
            ds.note("rotated boxes converted to their axis-aligned bounding box", f"{f}: {place}")
    elif shape.tag == "ellipse":
        cx, cy, rx, ry = attr("cx"), attr("cy"), attr("rx"), attr("ry")
        x1, y1, x2, y2 = cx - rx, cy - ry, cx + rx, cy + ry
        ds.note("ellipses converted to their bounding box", f"{f}: {place}")
    else:
        pts = _points(shape.get("points"), f, place)
        x1, y1, x2, y2 = polygon_box([p[0] for p in pts], [p[1] for p in pts])
        ds.note(f"CVAT {shape.tag} shapes converted to their bounding box", f"{f}: {place}")
    ds.add_box(img, label, x1, y1, x2, y2, place)


def _subset_folder(subset: str, f: Path, place: str, guard: PathGuard) -> Path:
    """`images/<subset>/` beside the XML, where CVAT's project export puts each subset's images.

    The subset is one folder name (Train, Validation, default...); one that is a path, or a folder that
    leads out of `images/` through a symlink, is refused.
    """
    if subset in (".", "..") or any(c in subset for c in "/\\\x00"):
        raise FormatError(f, place, f"subset {shorten(subset)} is not a folder name")
    return guard.join(f.parent / "images", subset, f, place)


def _points(text: str | None, f: Path, place: str) -> list[tuple[float, float]]:
    if not text:
        raise FormatError(f, f"{place}/@points", "missing")
    pts = []
    for pair in text.split(";"):
        xy = pair.split(",")
        if len(xy) != 2:
            raise FormatError(f, f"{place}/@points", f"expected 'x,y;x,y;...', got {shorten(pair)}")
        pts.append((number(xy[0], f, f"{place}/@points"), number(xy[1], f, f"{place}/@points")))
    return pts


def _rotated_bounds(x1: float, y1: float, x2: float, y2: float, degrees: float) -> tuple[float, ...]:
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    xs, ys = [], []
    for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2)):
        dx, dy = x - cx, y - cy
        xs.append(cx + dx * c - dy * s)
        ys.append(cy + dx * s + dy * c)
    return min(xs), min(ys), max(xs), max(ys)


def cvat_element(data: ExportData) -> Element:
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    meta = ET.SubElement(root, "meta")
    task = ET.SubElement(meta, "task")
    ET.SubElement(task, "name").text = data.project
    ET.SubElement(task, "size").text = str(len(data.images))
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for lab in data.labels:
        el = ET.SubElement(labels, "label")
        ET.SubElement(el, "name").text = lab.name
        ET.SubElement(el, "color").text = lab.color or "#e6194b"
        ET.SubElement(el, "type").text = "rectangle"
        ET.SubElement(el, "attributes")
    ET.SubElement(meta, "dumped").text = datetime.now(UTC).isoformat(sep=" ", timespec="seconds")
    for i, im in enumerate(data.images):
        el = ET.SubElement(root, "image", id=str(i), name=im.name, width=str(im.width), height=str(im.height))
        for k in data.boxes_of(i):
            x1, y1, x2, y2 = data.boxes[k].tolist()
            prov = data.box_provenance[k] if data.box_provenance else "imported"
            ET.SubElement(el, "box", label=data.labels[data.box_label[k]].name,
                          source=SOURCE_OF.get(prov, "manual"), occluded="0", xtl=f"{x1:.2f}", ytl=f"{y1:.2f}",
                          xbr=f"{x2:.2f}", ybr=f"{y2:.2f}", z_order="0")
    return root

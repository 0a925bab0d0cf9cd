"""Pascal VOC XML: one `<annotation>` file per image, boxes as pixel corners `xmin ymin xmax ymax`.

Read: float corners are accepted (labelImg and CVAT write them), `<size>` of 0 means "not stated",
`<path>` (an absolute path on the author's machine) is ignored in favour of `<filename>`. Corners are
taken as pixel edges, as labelImg, CVAT and the BCCD data write them (`xmax` = width at the right edge),
with no 1-based shift. Write: `OUT/Annotations/<stem>.xml`, images in `OUT/JPEGImages/`, and the image
list in `OUT/ImageSets/Main/default.txt`; corners rounded to whole pixels as VOC expects. The label
order travels in `labelmap.txt` (as CVAT and Datumaro write it), read back when present.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # writing only; parsing goes through defusedxml
from pathlib import Path, PurePosixPath

from projects.formats.common import (
    Dataset,
    ExportData,
    FormatError,
    ImageEntry,
    copy_image,
    integer,
    number,
    parse_xml,
    read_text,
    text_of,
)
from projects.formats.registry import Format, ReadContext, register

LABELMAP = "labelmap.txt"


@register
class Voc(Format):
    name = "voc"
    description = "Pascal VOC XML, one file per image (Annotations/, JPEGImages/)"

    def read(self, path: Path, ctx: ReadContext) -> Dataset:
        if path.is_file():
            files, base = [path], path.parent.parent
            roots_for = lambda f: (f.parent, base / "JPEGImages")
        else:
            ann = path / "Annotations" if (path / "Annotations").is_dir() else path
            files = sorted(ann.rglob("*.xml"))
            if not files:
                raise FormatError(path, "", "no VOC .xml files here (nor in Annotations/)")
            roots_for = lambda f: tuple(dict.fromkeys((f.parent, path / "JPEGImages", path / "images", path)))
        ds = Dataset(path)
        labelmap = (path.parent.parent if path.is_file() else path) / LABELMAP
        if labelmap.is_file():
            for name in read_labelmap(labelmap):  # the declared order is the label order
                ds.label_index(name)
        for f in files:
            read_voc_file(ds, f, roots_for(f))
        return ds

    def write(self, data: ExportData, out: Path) -> None:
        ann_dir, img_dir, sets = out / "Annotations", out / "JPEGImages", out / "ImageSets" / "Main"
        for d in (ann_dir, img_dir, sets):
            d.mkdir(parents=True, exist_ok=True)
        stems = []
        for i, im in enumerate(data.images):
            stem = PurePosixPath(im.name).stem
            stems.append(stem)
            tree = ET.ElementTree(voc_element(data, i))
            ET.indent(tree)
            tree.write(ann_dir / f"{stem}.xml", encoding="utf-8", xml_declaration=False)
            if data.copy_images:
                copy_image(im.path, img_dir / im.name)
        (sets / "default.txt").write_text("".join(s + "\n" for s in stems), encoding="utf-8")
        write_labelmap(data, out / LABELMAP)


def read_labelmap(f: Path) -> list[str]:
    """Label names in order from a Datumaro/CVAT `labelmap.txt` (`name:r,g,b:parts:actions` per line);
    VOC's segmentation `background` is not a detection label."""
    names = []
    for line in read_text(f).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split(":", 1)[0].strip()
        if name and name != "background" and name not in names:
            names.append(name)
    return names


def write_labelmap(data: ExportData, f: Path) -> None:
    """`labelmap.txt` as CVAT's and Datumaro's VOC exports write it: label order and colours survive."""
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    for lab in data.labels:
        c = (lab.color or "").lstrip("#")
        rgb = ",".join(str(int(c[k:k + 2], 16)) for k in (0, 2, 4)) if len(c) == 6 and _hex(c) else ""
        lines.append(f"{lab.name}:{rgb}::")
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _hex(s: str) -> bool:
    return all(ch in "0123456789abcdefABCDEF" for ch in s)


def read_voc_file(ds: Dataset, f: Path, roots: tuple[Path, ...]) -> None:
    root = parse_xml(f)
    if root.tag != "annotation":
        raise FormatError(f, f"<{root.tag}>", "expected a VOC <annotation> root element")
    name = text_of(root, "filename", f, "annotation")
    size = root.find("size")
    w = h = None
    if size is not None:
        ws, hs = text_of(size, "width", f, "annotation/size", False), text_of(size, "height", f, "annotation/size",
                                                                               False)
        w = integer(ws, f, "annotation/size/width") if ws is not None else None
        h = integer(hs, f, "annotation/size/height") if hs is not None else None
    img = ds.add_image(ImageEntry(name, str(f), "annotation/filename", roots, w or None, h or None))
    for j, obj in enumerate(root.findall("object"), start=1):
        where = f"annotation/object[{j}]"
        label = text_of(obj, "name", f, where)
        box = obj.find("bndbox")
        if box is None:
            raise FormatError(f, f"{where}/bndbox", "missing")
        x1, y1, x2, y2 = (number(text_of(box, k, f, f"{where}/bndbox"), f, f"{where}/bndbox/{k}")
                          for k in ("xmin", "ymin", "xmax", "ymax"))
        ds.add_box(img, label, x1, y1, x2, y2, where)


def voc_element(data: ExportData, i: int) -> ET.Element:
    im = data.images[i]
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = im.name
    ET.SubElement(ET.SubElement(root, "source"), "database").text = f"Labeler project {data.project}"
    size = ET.SubElement(root, "size")
    for k, v in (("width", im.width), ("height", im.height), ("depth", 3)):
        ET.SubElement(size, k).text = str(v)
    ET.SubElement(root, "segmented").text = "0"
    for k in data.boxes_of(i):
        x1, y1, x2, y2 = _whole(data.boxes[k])
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = data.labels[data.box_label[k]].name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bb = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (x1, y1, x2, y2)):
            ET.SubElement(bb, tag).text = str(v)
    return root


def _whole(box) -> tuple[int, int, int, int]:
    """Nearest whole pixels, never collapsing a box that had an area to none."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    if x2 <= x1 and box[2] > box[0]:
        x2 = x1 + 1
    if y2 <= y1 and box[3] > box[1]:
        y2 = y1 + 1
    return x1, y1, x2, y2

"""Files exactly as other tools write them (issue 10, "Formats: files other tools really write").

Each fixture below copies the shape of a real file: X-AnyLabeling 2.2+ label files (`LabelFile.save`:
rectangles as four corners tl, tr, br, bl, `checked`, `score`, `kie_linking`, `imageHeight` -1 when
unknown), CVAT project exports (`<image ... subset task_id>`, images in `images/<subset>/`), labelme files
that carry their image only in `imageData`, a YOLO folder with a README, and so on.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from projects.formats import FormatError, ImportOptions, TransferError, export_project, import_annotations
from projects.imaging import write_image
from projects.taxonomy import CustomerTaxonomy, Label
from projects.workspace import Workspace


@pytest.fixture
def target(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    ws.add_project("T", CustomerTaxonomy([Label("car", "car"), Label("person", "person")], name="T"))
    yield ws
    ws.close()


def img(path: Path, w: int = 100, h: int = 50, value: int = 7) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.full((h, w, 3), value, dtype=np.uint8))
    return path


def add_labeled(ws: Workspace, project: str, path: Path, *labeled: tuple) -> int:
    """Add an image file with boxes (label, x1, y1, x2, y2) to a project, as an annotator would."""
    iid = ws.add_images(project, [path]).added[0]
    label_ids = {lab["name"]: lab["id"] for lab in ws.labels(project)}
    for label, *box in labeled:
        ws.add_annotation(iid, label_ids[label], tuple(box))
    return iid


def boxes(ws: Workspace, project: str = "T") -> list[tuple]:
    return sorted((Path(ws.image(i)["path"]).name, a["label"], round(a["x1"], 3), round(a["y1"], 3),
                   round(a["x2"], 3), round(a["y2"], 3)) for i in ws.image_ids(project) for a in ws.annotations(i))


def xanylabeling_shape(label: str, points: list, shape_type: str = "rectangle", **extra) -> dict:
    """One shape as X-AnyLabeling's `Shape.to_dict()` writes it."""
    return {"label": label, "score": None, "points": points, "group_id": None, "description": "",
            "difficult": False, "shape_type": shape_type, "flags": {}, "attributes": {}, "kie_linking": [], **extra}


def xanylabeling_file(shapes: list, image_path: str, w: int, h: int, image_data: str | None = None) -> dict:
    """A label file as X-AnyLabeling's `LabelFile.save()` writes it (create_xlabel_template + shapes)."""
    return {"version": "3.2.1", "flags": {}, "checked": False, "shapes": shapes, "imagePath": image_path,
            "imageData": image_data, "imageHeight": h, "imageWidth": w, "description": ""}


# --- X-AnyLabeling -------------------------------------------------------------------------------
def test_xanylabeling_four_point_rectangles_hidden_shapes_and_rotations(tmp_path, target):
    folder = tmp_path / "xal"
    img(folder / "street.jpg", 200, 100)
    shapes = [
        xanylabeling_shape("car", [[10.0, 5.0], [30.0, 5.0], [30.0, 20.0], [10.0, 20.0]]),
        # hidden in X-AnyLabeling's view (the check box in its object list): still a real annotation
        xanylabeling_shape("person", [[40.0, 10.0], [60.0, 10.0], [60.0, 50.0], [40.0, 50.0]], visible=False),
        # an auto-labelled box keeps its score; corners in another order than X-AnyLabeling's own
        xanylabeling_shape("car", [[150.0, 80.0], [120.0, 80.0], [120.0, 60.0], [150.0, 60.0]], score=0.87),
        # a rotated box: X-AnyLabeling's 'rotation' shape, 4 corners + direction
        xanylabeling_shape("car", [[100.0, 30.0], [110.0, 20.0], [120.0, 30.0], [110.0, 40.0]], "rotation",
                           direction=0.785),
        xanylabeling_shape("person", [[5.0, 5.0]], "point"),
    ]
    (folder / "street.json").write_text(json.dumps(xanylabeling_file(shapes, "street.jpg", 200, 100), indent=2))
    rep = import_annotations(target, "T", "labelme", folder)
    assert boxes(target) == [("street.jpg", "car", 10, 5, 30, 20), ("street.jpg", "car", 100, 20, 120, 40),
                             ("street.jpg", "car", 120, 60, 150, 80), ("street.jpg", "person", 40, 10, 60, 50)]
    assert rep.counts["rotated rectangles (X-AnyLabeling 'rotation') converted to their bounding box"] == 1
    assert rep.counts["labelme 'point' shapes (not boxes), skipped"] == 1
    assert not any("not axis-aligned" in k for k in rep.counts)  # X-AnyLabeling's own rectangles are exact
    assert not any("size differs" in k for k in rep.counts)


def test_xanylabeling_unknown_size_and_a_skewed_four_point_rectangle(tmp_path, target):
    folder = tmp_path / "xal"
    img(folder / "a.png", 100, 50)
    shapes = [xanylabeling_shape("car", [[10.0, 5.0], [32.0, 7.0], [30.0, 20.0], [8.0, 18.0]])]
    (folder / "a.json").write_text(json.dumps(xanylabeling_file(shapes, "a.png", -1, -1)))
    rep = import_annotations(target, "T", "labelme", folder)
    assert boxes(target) == [("a.png", "car", 8, 5, 32, 20)]  # what X-AnyLabeling saves for it: the bounding box
    assert rep.counts["4-point rectangles that were not axis-aligned: their bounding box used"] == 1
    assert not any("size differs" in k for k in rep.counts)  # -1 means "not known", not a wrong size


def test_a_rectangle_with_three_points_is_still_refused_by_name(tmp_path, target):
    folder = tmp_path / "lm"
    img(folder / "a.png")
    shapes = [xanylabeling_shape("car", [[1, 1], [5, 1], [5, 5]])]
    (folder / "a.json").write_text(json.dumps(xanylabeling_file(shapes, "a.png", 100, 50)))
    with pytest.raises(FormatError, match=r"a\.json: \$\.shapes\[0\]\.points: a rectangle has 2 corners"):
        import_annotations(target, "T", "labelme", folder)
    assert target.image_ids("T") == []


def test_our_labelme_export_is_what_xanylabeling_reads(tmp_path, target):
    """X-AnyLabeling's LabelFile.load takes a 2-point rectangle and expands it (rectangle_from_diagonal);
    labelme itself only draws 2-point ones. So the export keeps labelme's 2 corners, with the keys both need."""
    add_labeled(target, "T", img(tmp_path / "src" / "a.jpg"), ("car", 10, 5, 30, 20))
    export_project(target, "T", "labelme", tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "a.json").read_text())
    assert {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"} <= set(doc)
    assert doc["imagePath"] == "a.jpg" and (tmp_path / "out" / doc["imagePath"]).is_file()
    assert doc["shapes"][0]["shape_type"] == "rectangle" and doc["shapes"][0]["points"] == [[10, 5], [30, 20]]
    # ... and as X-AnyLabeling saves it again (4 corners), it reads back into the same box
    doc["shapes"][0]["points"] = [[10.0, 5.0], [30.0, 5.0], [30.0, 20.0], [10.0, 20.0]]
    (tmp_path / "out" / "a.json").write_text(json.dumps(doc))
    target.add_project("U", CustomerTaxonomy([Label("car", "car")], name="U"))
    import_annotations(target, "U", "labelme", tmp_path / "out")
    assert boxes(target, "U") == [("a.jpg", "car", 10, 5, 30, 20)]


# --- labelme: the image only inside the JSON -----------------------------------------------------
def _b64(image: np.ndarray, ext: str, wrap: bool = False) -> str:
    ok, data = cv2.imencode(ext, image)
    text = base64.b64encode(data.tobytes()).decode()
    return "\n".join(text[i:i + 76] for i in range(0, len(text), 76)) + "\n" if wrap else text


@pytest.mark.parametrize("image_path, data_ext, wrap, stored", [
    ("photo.png", ".png", False, "photo.png"),
    ("photo.bmp", ".png", False, "photo.png"),  # labelme 3/4 re-encoded every non-JPEG image as PNG
    ("photo", ".jpg", False, "photo.jpg"),  # no suffix in imagePath: the bytes say JPEG
    ("", ".png", False, "shot.png"),  # no imagePath at all: named after the JSON
    ("..\\pics\\photo.png", ".png", True, "photo.png"),  # Windows path, base64 wrapped at 76 (encodestring)
])
def test_labelme_image_only_in_image_data(tmp_path, target, image_path, data_ext, wrap, stored):
    pixels = np.zeros((40, 60, 3), dtype=np.uint8)
    pixels[10:20, 10:30] = 255
    doc = {"version": "4.5.6", "flags": {}, "shapes": [
        {"label": "car", "points": [[30, 20], [10, 10]], "group_id": None, "shape_type": "rectangle", "flags": {}}],
        "imagePath": image_path, "imageData": _b64(pixels, data_ext, wrap), "imageHeight": 40, "imageWidth": 60}
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "shot.json").write_text(json.dumps(doc, indent=2))
    import_annotations(target, "T", "labelme", tmp_path / "lm")
    assert boxes(target) == [(stored, "car", 10, 10, 30, 20)]
    (iid,) = target.image_ids("T")
    row = target.image(iid)
    assert row["path"] == f"images/T/{stored}" and (row["width"], row["height"]) == (60, 40)
    assert target.image_path(row["path"]).is_file()
    assert not list(target.folder.glob(".import-*"))  # the staged copy moved into place, nothing left behind
    # importing the same file again finds that image (same name, same content) and adds nothing
    rep = import_annotations(target, "T", "labelme", tmp_path / "lm")
    assert rep.boxes_imported == 0 and len(target.image_ids("T")) == 1


# --- CVAT project export -------------------------------------------------------------------------
def cvat_project_xml(images: list[tuple[str, str, int, list[str]]]) -> str:
    """annotations.xml as CVAT writes a *project* export in "CVAT for images 1.1": project meta with its
    tasks, and every image with `subset` and `task_id` (dump_as_cvat_annotation for ProjectData)."""
    tasks = {subset: k + 1 for k, subset in enumerate(dict.fromkeys(s for s, *_ in images))}
    task_xml = "".join(f"<task><id>{tid}</id><name>street {subset}</name><size>1</size><mode>annotation</mode>"
                       f"<overlap>0</overlap><bugtracker></bugtracker><created>2024-05-02 09:12:40.101000+00:00"
                       f"</created><updated>2024-05-02 10:00:00.000000+00:00</updated><subset>{subset}</subset>"
                       f"<start_frame>0</start_frame><stop_frame>0</stop_frame><frame_filter></frame_filter>"
                       f"</task>" for subset, tid in tasks.items())
    head = ('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n  <meta>\n'
            '    <project><id>4</id><name>streets</name><created>2024-05-02 09:10:00.000000+00:00</created>'
            '<updated>2024-05-02 10:00:00.000000+00:00</updated><labels>'
            '<label><name>car</name><color>#fa3253</color><type>any</type><attributes></attributes></label>'
            '<label><name>person</name><color>#33ddff</color><type>any</type><attributes></attributes></label>'
            f'</labels><owner><username>ann</username><email></email></owner><assignee></assignee>'
            f'<tasks>{task_xml}</tasks></project>\n'
            '    <dumped>2024-05-02 10:05:00.000000+00:00</dumped>\n  </meta>\n')
    body = ""
    for subset, name, frame, shapes in images:
        body += (f'  <image id="{frame}" name="{name}" subset="{subset}" task_id="{tasks[subset]}" width="100" '
                 f'height="50">\n' + "".join(f"    {s}\n" for s in shapes) + "  </image>\n")
    return head + body + "</annotations>\n"


def box(label: str, x1: float, y1: float, x2: float, y2: float) -> str:
    return (f'<box label="{label}" source="manual" occluded="0" xtl="{x1:.2f}" ytl="{y1:.2f}" xbr="{x2:.2f}" '
            f'ybr="{y2:.2f}" z_order="0"></box>')


def test_cvat_project_subsets_are_their_own_folders(tmp_path, target):
    """Two tasks each start at frame_000000.jpg: two images, each with its own boxes, once."""
    root = tmp_path / "project"
    img(root / "images" / "Train" / "frame_000000.jpg", value=10)
    img(root / "images" / "Test" / "frame_000000.jpg", value=200)
    img(root / "images" / "Test" / "frame_000001.jpg", value=90)
    (root / "annotations.xml").write_text(cvat_project_xml([
        ("Train", "frame_000000.jpg", 0, [box("car", 1, 2, 20, 20)]),
        ("Test", "frame_000000.jpg", 0, [box("person", 5, 5, 15, 40)]),
        ("Test", "frame_000001.jpg", 1, [box("car", 30, 10, 60, 30),
                                         '<polyline label="" source="manual" occluded="0" points="1.00,1.00;9.00,'
                                         '4.00;20.00,7.00" z_order="0"></polyline>']),
    ]))
    rep = import_annotations(target, "T", "cvat", root)
    by_path = {target.image(i)["path"]: sorted((a["label"], a["x1"]) for a in target.annotations(i))
               for i in target.image_ids("T")}
    assert by_path == {str(root / "images" / "Train" / "frame_000000.jpg"): [("car", 1.0)],
                       str(root / "images" / "Test" / "frame_000000.jpg"): [("person", 5.0)],
                       str(root / "images" / "Test" / "frame_000001.jpg"): [("car", 30.0)]}
    assert rep.counts["CVAT shapes without a label, skipped"] == 1
    assert "image[3]/polyline[1]" in rep.examples["CVAT shapes without a label, skipped"][0]


def test_cvat_project_listing_one_picture_in_every_subset_imports_it_once(tmp_path, target):
    root = tmp_path / "project"
    shapes = [box("car", 1, 2, 20, 20), box("person", 50, 5, 60, 45)]
    for subset in ("Train", "Validation", "Test"):
        img(root / "images" / subset / "street.jpg", value=33)  # the same bytes in each subset's folder
    (root / "annotations.xml").write_text(cvat_project_xml(
        [(subset, "street.jpg", 0, shapes) for subset in ("Train", "Validation", "Test")]))
    rep = import_annotations(target, "T", "cvat", root)
    assert boxes(target) == [("street.jpg", "car", 1, 2, 20, 20), ("street.jpg", "person", 50, 5, 60, 45)]
    assert len(target.image_ids("T")) == 1 and rep.boxes_imported == 2
    assert rep.counts["images with the same name and content in several places (imported once)"] == 2
    assert rep.counts["boxes repeated by an image listed more than once (imported once)"] == 4


def test_cvat_project_flattened_images_folder_still_imports_each_box_once(tmp_path, target):
    """The same export with its images moved into one folder: the three entries are one file."""
    root = tmp_path / "project"
    img(root / "images" / "street.jpg", value=33)
    (root / "annotations.xml").write_text(cvat_project_xml(
        [(subset, "street.jpg", 0, [box("car", 1, 2, 20, 20)]) for subset in ("Train", "Validation", "Test")]))
    rep = import_annotations(target, "T", "cvat", root)
    assert boxes(target) == [("street.jpg", "car", 1, 2, 20, 20)]
    assert rep.counts["boxes repeated by an image listed more than once (imported once)"] == 2


@pytest.mark.parametrize("subset", ["../../etc", "a/b", ".."])
def test_cvat_subset_that_is_a_path_is_refused(tmp_path, target, subset):
    root = tmp_path / "project"
    (root / "images").mkdir(parents=True)
    (root / "annotations.xml").write_text(cvat_project_xml([(subset, "a.jpg", 0, [box("car", 1, 2, 20, 20)])]))
    with pytest.raises(FormatError, match=r"annotations\.xml: annotations/image\[1\]/@subset: subset .* is not a "
                                          r"folder name"):
        import_annotations(target, "T", "cvat", root)
    assert target.image_ids("T") == []


# --- YOLO folders as people hand them over --------------------------------------------------------
def test_yolo_labels_folder_with_a_readme_and_classes_one_folder_up(tmp_path, target):
    """dataset/classes.txt, dataset/images/*.jpg, dataset/labels/*.txt + README.txt; the labels folder is given."""
    root = tmp_path / "dataset"
    img(root / "images" / "a.jpg", 200, 100)
    img(root / "images" / "b.jpg", 200, 100, value=99)
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.1 0.1\n")
    (root / "labels" / "b.txt").write_text("")
    (root / "labels" / "README.txt").write_text("Exported with labelImg 1.8.6.\nClasses: see ../classes.txt\n")
    (root / "classes.txt").write_text("person\ncar\n")
    rep = import_annotations(target, "T", "yolo", root / "labels")
    assert boxes(target) == [("a.jpg", "car", 80, 30, 120, 70), ("a.jpg", "person", 10, 5, 30, 15)]
    assert len(target.image_ids("T")) == 2  # b.jpg: an empty label file, an image without objects
    assert rep.counts["text files that are neither label files nor named like an image, skipped"] == 1
    assert rep.counts["class names read from the folder above the labels"] == 1


def test_yolo_readme_beside_the_images_and_a_real_orphan_label_file(tmp_path, target):
    root = tmp_path / "darknet"
    img(root / "a.jpg", 100, 100)
    (root / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "README.txt").write_text("This dataset was exported from Roboflow.\n")
    (root / "gone.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # a label file whose image is missing: still reported
    (root / "obj.names").write_text("car\n")
    with pytest.raises(TransferError, match=r"(?s)1 images named in the annotations cannot be found.*gone\.txt"):
        import_annotations(target, "T", "yolo", root)
    rep = import_annotations(target, "T", "yolo", root, ImportOptions(skip_missing=True))
    assert boxes(target) == [("a.jpg", "car", 40, 40, 60, 60)]
    assert rep.counts["images not found, skipped with their boxes"] == 1
    assert rep.counts["text files that are neither label files nor named like an image, skipped"] == 1


# --- labels come with their boxes ------------------------------------------------------------------
def test_skip_missing_with_nothing_found_creates_no_labels(tmp_path, target, capsys):
    from labeler.cli import main

    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    (tmp_path / "voc" / "Annotations" / "a.xml").write_text(
        "<annotation><folder>JPEGImages</folder><filename>a.jpg</filename><size><width>100</width><height>50"
        "</height><depth>3</depth></size><object><name>zebra</name><pose>Unspecified</pose><truncated>0"
        "</truncated><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
        "</bndbox></object></annotation>")
    before = [lab["name"] for lab in target.labels("T")]
    folder = target.folder
    target.close()
    rc = main(["import", str(folder), "--project", "T", "--format", "voc", str(tmp_path / "voc"), "--add-labels",
               "--skip-missing"])
    out, err = capsys.readouterr()
    assert rc == 0 and "imported 0 boxes" in out
    assert "labels not created (no box that uses them was imported): 1" in err and "added labels" not in out + err
    with Workspace.open(folder) as ws:
        assert [lab["name"] for lab in ws.labels("T")] == before


def test_labels_whose_boxes_were_all_skipped_are_not_created_but_listed_ones_are(tmp_path, target):
    """A CVAT task: 'truck' is listed in <meta> but unused, 'bus' only boxes an image that is missing."""
    root = tmp_path / "task"
    img(root / "images" / "a.jpg")
    (root / "annotations.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version><meta><task><id>1</id>'
        '<name>t</name><size>2</size><mode>annotation</mode><labels>'
        + "".join(f"<label><name>{n}</name><color>#fa3253</color><type>rectangle</type><attributes></attributes>"
                  f"</label>" for n in ("car", "truck", "bus"))
        + '</labels></task><dumped>2024-05-02 10:05:00.000000+00:00</dumped></meta>'
        '<image id="0" name="a.jpg" width="100" height="50">' + box("car", 1, 1, 20, 20) + '</image>'
        '<image id="1" name="gone.jpg" width="100" height="50">' + box("bus", 1, 1, 20, 20) + '</image>'
        '</annotations>')
    rep = import_annotations(target, "T", "cvat", root, ImportOptions(add_labels=True, skip_missing=True))
    assert [lab["name"] for lab in target.labels("T")] == ["car", "person", "truck"]
    assert rep.labels_added == ["truck"]
    assert rep.examples["labels not created (no box that uses them was imported)"] == ["bus"]


# --- label order survives an export and a re-import -------------------------------------------------
@pytest.mark.parametrize("fmt", ["coco", "yolo", "cvat", "voc", "labelstudio", "labelme"])
def test_reimporting_an_export_keeps_the_label_order(tmp_path, fmt):
    """Labels in an order that is neither alphabetical nor the order boxes first use them, one unused:
    the YOLO class ids of the next export are the same as those of a direct export."""
    src = Workspace.create(tmp_path / "src")
    src.add_project("P", CustomerTaxonomy([Label("Zebra", "bus"), Label("Apple", "car"), Label("Mango", "truck"),
                                           Label("Kiwi", "person")], name="P"))
    add_labeled(src, "P", img(tmp_path / "pics" / "a.jpg"), ("Mango", 1, 1, 10, 10), ("Apple", 20, 1, 30, 10))
    add_labeled(src, "P", img(tmp_path / "pics" / "b.jpg", value=50), ("Zebra", 5, 5, 25, 25))
    export_project(src, "P", fmt, tmp_path / "export")
    export_project(src, "P", "yolo", tmp_path / "yolo-direct")

    dst = Workspace.create(tmp_path / "dst")
    dst.add_project("P", CustomerTaxonomy([], name="P"))
    import_annotations(dst, "P", fmt, tmp_path / "export", ImportOptions(add_labels=True))
    export_project(dst, "P", "yolo", tmp_path / "yolo-again")
    assert [lab["name"] for lab in dst.labels("P")] == ["Zebra", "Apple", "Mango", "Kiwi"]
    classes = [(tmp_path / out / "classes.txt").read_text() for out in ("yolo-direct", "yolo-again")]
    assert classes[0] == classes[1] == "Zebra\nApple\nMango\nKiwi\n"
    direct = sorted(p.read_text() for p in (tmp_path / "yolo-direct" / "labels").rglob("*.txt"))
    again = sorted(p.read_text() for p in (tmp_path / "yolo-again" / "labels").rglob("*.txt"))
    assert again == direct  # same class ids on every line

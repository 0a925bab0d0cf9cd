"""Files in the shapes other tools really write: each reader takes them, boxes land where they should."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from projects.formats import FormatError, ImportOptions, import_annotations
from projects.imaging import write_image
from projects.taxonomy import CustomerTaxonomy, Label
from projects.workspace import Workspace

TAX = CustomerTaxonomy([Label("car", "car"), Label("person", "person")], name="T")


@pytest.fixture
def target(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    ws.add_project("T", TAX)
    yield ws
    ws.close()


def img(path: Path, w: int = 100, h: int = 50) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.full((h, w, 3), hash(path.name) % 250, dtype=np.uint8))
    return path


def boxes(ws: Workspace) -> list[tuple]:
    return sorted((Path(ws.image(i)["path"]).name, a["label"], round(a["x1"], 4), round(a["y1"], 4),
                   round(a["x2"], 4), round(a["y2"], 4)) for i in ws.image_ids("T") for a in ws.annotations(i))


def test_voc_float_corners_zero_size_and_foreign_path(tmp_path, target):
    img(tmp_path / "voc" / "JPEGImages" / "a.jpg")
    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    (tmp_path / "voc" / "Annotations" / "a.xml").write_text(
        "<annotation><folder>x</folder><filename>a.jpg</filename><path>C:\\Users\\me\\a.jpg</path>"
        "<size><width>0</width><height>0</height><depth>3</depth></size>"
        "<object><name>car</name><difficult>1</difficult><bndbox><xmin>10.6</xmin><ymin>5.2</ymin>"
        "<xmax>20.4</xmax><ymax>25</ymax></bndbox></object></annotation>")
    import_annotations(target, "T", "voc", tmp_path / "voc")
    assert boxes(target) == [("a.jpg", "car", 10.6, 5.2, 20.4, 25.0)]


def test_coco_extensionless_names_crowd_and_missing_sizes(tmp_path, target):
    img(tmp_path / "coco" / "images" / "0001.jpg")
    img(tmp_path / "coco" / "images" / "sub" / "0002.png")
    doc = {"images": [{"id": 7, "file_name": "0001"}, {"id": 8, "file_name": "sub/0002.png", "width": 100,
                                                         "height": 50}],
           "categories": [{"id": 3, "name": "car"}, {"id": 9, "name": "person"}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 10, 20]},
                           {"id": 2, "image_id": 8, "category_id": 9, "bbox": [5.5, 6, 7, 8], "iscrowd": 0},
                           {"id": 3, "image_id": 8, "category_id": 9, "bbox": [0, 0, 50, 50], "iscrowd": 1}]}
    (tmp_path / "coco" / "instances.json").write_text(json.dumps(doc))
    rep = import_annotations(target, "T", "coco", tmp_path / "coco")
    assert boxes(target) == [("0001.jpg", "car", 1, 2, 11, 22), ("0002.png", "person", 5.5, 6, 12.5, 14)]
    assert rep.counts["crowd regions (iscrowd=1), skipped"] == 1


def test_yolo_ultralytics_names_as_dict_roboflow_paths_and_segments(tmp_path, target):
    root = tmp_path / "ds"
    img(root / "train" / "images" / "a.jpg", 200, 100)
    img(root / "valid" / "images" / "b.jpg", 200, 100)
    (root / "train" / "labels").mkdir(parents=True)
    (root / "valid" / "labels").mkdir(parents=True)
    (root / "train" / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n\n0 0.1 0.1 0.3 0.1 0.3 0.3\n")
    (root / "data.yaml").write_text("path: /home/someone/datasets/x\ntrain: ../train/images\nval: ../valid/images\n"
                                    "nc: 2\nnames:\n  0: car\n  1: person\n")
    rep = import_annotations(target, "T", "yolo", root / "data.yaml")
    assert boxes(target) == [("a.jpg", "car", 20, 10, 60, 30), ("a.jpg", "person", 80, 30, 120, 70)]
    assert rep.counts["segmentation polygons converted to their bounding box"] == 1
    assert target.image_ids("T").__len__() == 2  # b.jpg has no label file: an image without objects
    assert any("path" in k for k in rep.counts)  # the foreign absolute 'path' is reported, not followed


def test_yolo_darknet_cvat_layout(tmp_path, target):
    root = tmp_path / "cvat_yolo"
    img(root / "obj_train_data" / "f0.png", 100, 100)
    (root / "obj.names").write_text("person\ncar\n\n")
    (root / "obj.data").write_text("classes = 2\ntrain = data/train.txt\nnames = data/obj.names\n")
    (root / "train.txt").write_text("data/obj_train_data/f0.png\n")
    (root / "obj_train_data" / "f0.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    import_annotations(target, "T", "yolo", root)
    assert boxes(target) == [("f0.png", "car", 25, 25, 75, 75)]


@pytest.mark.parametrize("line,match", [("0 0.5 0.5 0.1 0.1 0.9", "prediction file"),
                                        ("7 0.5 0.5 0.1 0.1", r"class id 7 outside 0\.\.1"),
                                        ("car 0.5 0.5 0.1 0.1", "expected numbers"),
                                        ("0.5 0.5 0.5 0.1 0.1", "not a whole number")])
def test_yolo_bad_lines_name_file_and_line(tmp_path, target, line, match):
    img(tmp_path / "y" / "a.jpg")
    (tmp_path / "y" / "classes.txt").write_text("car\nperson\n")
    (tmp_path / "y" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n" + line + "\n")
    with pytest.raises(FormatError, match=rf"a\.txt: line 2: .*{match}"):
        import_annotations(target, "T", "yolo", tmp_path / "y")


def test_labelstudio_two_annotators_urls_rotation_and_polygons(tmp_path, target):
    img(tmp_path / "imgs" / "8f2a-street.jpg", 200, 100)
    rect = lambda x, y, w, h, lab, rot=0: {"id": lab + str(x), "type": "rectanglelabels", "from_name": "label",
                                           "to_name": "image", "original_width": 200, "original_height": 100,
                                           "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rot,
                                                     "rectanglelabels": [lab]}}
    tasks = [{"id": 1, "data": {"image": "/data/upload/3/8f2a-street.jpg"},
              "annotations": [
                  {"id": 10, "completed_by": 1, "updated_at": "2024-01-01T10:00:00Z",
                   "result": [rect(10, 10, 10, 10, "car")]},
                  {"id": 11, "completed_by": 2, "updated_at": "2024-02-01T10:00:00Z",
                   "result": [rect(50, 50, 10, 20, "person"), rect(0, 0, 10, 10, "car", 90),
                              {"id": "p", "type": "polygonlabels", "original_width": 200, "original_height": 100,
                               "value": {"points": [[10, 10], [20, 40], [5, 30]], "polygonlabels": ["car"]}},
                              {"id": "c", "type": "choices", "value": {"choices": ["day"]}}]},
                  {"id": 12, "was_cancelled": True, "updated_at": "2025-01-01T10:00:00Z", "result": []}]}]
    (tmp_path / "ls.json").write_text(json.dumps(tasks))
    rep = import_annotations(target, "T", "labelstudio", tmp_path / "ls.json",
                             ImportOptions(images_dir=tmp_path / "imgs"))
    got = boxes(target)
    assert ("8f2a-street.jpg", "person", 100, 50, 120, 70) in got
    assert ("8f2a-street.jpg", "car", 10, 10, 40, 40) in got  # the polygon's bounding box
    assert ("8f2a-street.jpg", "car", 0, 0, 20, 20) not in got  # the first annotator's box is not doubled in
    # rotated 90 degrees about its top-left corner (0, 0): 20x10 px becomes x in [-10, 0] -> clamped away
    assert len(got) == 2
    assert rep.counts["tasks with several annotations (the most recently updated one was used)"] == 1
    assert rep.counts["rotated rectangles converted to their axis-aligned bounding box"] == 1
    assert rep.counts["boxes entirely outside the image, skipped"] == 1


def test_labelme_embedded_image_without_version(tmp_path, target):
    import cv2

    pixels = np.zeros((40, 60, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", pixels)
    doc = {"shapes": [{"label": "car", "points": [[30, 20], [10, 5]], "shape_type": "rectangle"},
                      {"label": "person", "points": [[1, 1], [9, 3], [4, 8]], "shape_type": "polygon"},
                      {"label": "person", "points": [[1, 1]], "shape_type": "point"}],
           "imagePath": "..\\gone\\photo.png", "imageData": base64.b64encode(png.tobytes()).decode(),
           "imageHeight": 40, "imageWidth": 60}
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "photo.json").write_text(json.dumps(doc))
    rep = import_annotations(target, "T", "labelme", tmp_path / "lm")
    assert boxes(target) == [("photo.png", "car", 10, 5, 30, 20), ("photo.png", "person", 1, 1, 9, 8)]
    stored = target.image(target.image_ids("T")[0])["path"]
    assert stored.startswith("images/T/") and target.image_path(stored).is_file()
    assert rep.counts["polygons converted to their bounding box"] == 1
    assert rep.counts["labelme 'point' shapes (not boxes), skipped"] == 1


def test_cvat_polygons_rotation_and_video_refused(tmp_path, target):
    img(tmp_path / "cvat" / "images" / "f.jpg", 100, 100)
    xml = ('<?xml version="1.0"?><annotations><version>1.1</version><meta><task><labels><label><name>car</name>'
           '</label><label><name>person</name></label></labels></task></meta>'
           '<image id="0" name="f.jpg" width="100" height="100">'
           '<box label="car" occluded="0" xtl="10" ytl="10" xbr="30" ybr="20" rotation="90"/>'
           '<polygon label="person" points="50,50;60,70;55,80"/><tag label="car"/></image></annotations>')
    (tmp_path / "cvat" / "annotations.xml").write_text(xml)
    rep = import_annotations(target, "T", "cvat", tmp_path / "cvat")
    assert boxes(target) == [("f.jpg", "car", 15, 5, 25, 25), ("f.jpg", "person", 50, 50, 60, 80)]
    assert rep.counts["CVAT polygon shapes converted to their bounding box"] == 1
    (tmp_path / "video.xml").write_text('<annotations><version>1.1</version><track id="0" label="car"/>'
                                        '</annotations>')
    with pytest.raises(FormatError, match="CVAT for video"):
        import_annotations(target, "T", "cvat", tmp_path / "video.xml")

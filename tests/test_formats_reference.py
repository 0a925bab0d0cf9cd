"""Exported files load in other tools' own readers: pycocotools for COCO, globox for VOC, YOLO, labelme, CVAT."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from test_formats_support import IMAGES, make_source

from projects.formats import export_project

globox = pytest.importorskip("globox")
# globox finds a YOLO image by one extension, so this project's images are all JPEGs.
JPEG_IMAGES = [(name.replace(".png", ".jpg"), w, h, boxes) for name, w, h, boxes in IMAGES]


def _expected(ws) -> list[tuple]:
    return sorted((a["label"], a["x1"], a["y1"], a["x2"], a["y2"]) for i in ws.image_ids("P")
                  for a in ws.annotations(i))


def _close(got: list[tuple], want: list[tuple], tol: float) -> None:
    assert len(got) == len(want)
    for g, w in zip(sorted(got), sorted(want)):
        assert g[0] == w[0] and np.allclose(g[1:], w[1:], atol=tol, rtol=0), (g, w)


def test_pycocotools_reads_the_coco_export(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ws = make_source(tmp_path / "src")
    export_project(ws, "P", "coco", tmp_path / "out")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "out" / "annotations.json"))
    cats = gt.loadCats(gt.getCatIds())
    assert [(c["id"], c["name"]) for c in cats] == [(1, "Car"), (2, "Human"), (3, "Light")]  # 1-based, label order
    got = []
    for ann in gt.loadAnns(gt.getAnnIds()):
        x, y, w, h = ann["bbox"]
        got.append((gt.cats[ann["category_id"]]["name"], x, y, x + w, y + h))
        assert ann["area"] == pytest.approx(w * h)
    _close(got, _expected(ws), 1e-9)
    for img in gt.loadImgs(gt.getImgIds()):
        assert (tmp_path / "out" / "images" / img["file_name"]).is_file()
    # The ground truth scored against itself is perfect: pycocotools reads boxes the way we wrote them.
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt.loadAnns(gt.getAnnIds())]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[1] == pytest.approx(1.0)  # AP@0.5


@pytest.mark.parametrize("fmt,tol", [("voc", 0.5), ("yolo", 1e-3), ("labelme", 1e-9), ("cvat", 0.005)])
def test_globox_reads_the_export(tmp_path, fmt, tol):
    from globox import AnnotationSet

    ws = make_source(tmp_path / "src", images=JPEG_IMAGES)
    out = tmp_path / "out"
    export_project(ws, "P", fmt, out)
    if fmt == "voc":
        sets = AnnotationSet.from_pascal_voc(out / "Annotations")
    elif fmt == "yolo":
        names = (out / "classes.txt").read_text().split()
        sets = AnnotationSet()
        for split in sorted(p.name for p in (out / "labels").iterdir()):  # the export splits by stable bucket
            sets |= AnnotationSet.from_yolo_darknet(out / "labels" / split, image_folder=out / "images" / split)
        sets = sets.map_labels({str(i): n for i, n in enumerate(names)})
    elif fmt == "labelme":
        sets = AnnotationSet.from_labelme(out)
    else:
        sets = AnnotationSet.from_cvat(out / "annotations.xml")
    got = [(b.label, *b.ltrb) for ann in sets for b in ann.boxes]
    _close(got, _expected(ws), tol)
    assert len(list(sets)) == len(JPEG_IMAGES)


def test_labelstudio_export_matches_its_config(tmp_path):
    ws = make_source(tmp_path / "src")
    export_project(ws, "P", "labelstudio", tmp_path / "out")
    tasks = json.loads((tmp_path / "out" / "result.json").read_text())
    config = (tmp_path / "out" / "labeling_config.xml").read_text()
    names = {r["value"]["rectanglelabels"][0] for t in tasks for a in t["annotations"] for r in a["result"]}
    assert names <= {"Car", "Human", "Light"} and all(f'value="{n}"' in config for n in names)
    for t in tasks:
        assert (tmp_path / "out" / t["data"]["image"]).is_file()
        for r in t["annotations"][0]["result"]:
            v = r["value"]
            assert 0 <= v["x"] <= 100 and 0 <= v["x"] + v["width"] <= 100 + 1e-9


def test_label_studio_converter_reads_the_labelstudio_export(tmp_path):
    """Label Studio's own converter (label-studio-converter) turns our export into COCO with the same boxes."""
    converter = pytest.importorskip("label_studio_converter")
    ws = make_source(tmp_path / "src")
    out = tmp_path / "out"
    export_project(ws, "P", "labelstudio", out)
    conv = converter.Converter((out / "labeling_config.xml").read_text(), str(out), download_resources=False)
    with contextlib.redirect_stdout(io.StringIO()):
        conv.convert_to_coco(str(out / "result.json"), str(tmp_path / "conv"), is_dir=False)
    doc = json.loads((tmp_path / "conv" / "result.json").read_text())
    names = {c["id"]: c["name"] for c in doc["categories"]}
    got = [(names[a["category_id"]], a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
            a["bbox"][1] + a["bbox"][3]) for a in doc["annotations"]]
    _close(got, _expected(ws), 1e-6)

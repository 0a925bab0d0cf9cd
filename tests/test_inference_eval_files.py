"""`labeler eval --gt GT.json --dets DETS.json`: detections as a COCO dataset file, all 12 COCO figures."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from inference.evaluate import COCO_STATS, coco_evaluate
from labeler.cli import main


def _gt_and_results(seed: int = 3) -> tuple[dict, list[dict]]:
    """A ground truth with file names and three categories, and a noisy results list for it."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "file_name": f"frames/f{i:03d}.jpg", "width": 640, "height": 480} for i in range(8)]
    anns, dets = [], []
    for im in images:
        for _ in range(int(rng.integers(2, 7))):
            w, h = float(rng.choice([12, 60, 160])) * rng.uniform(0.8, 1.2), float(rng.uniform(10, 150))
            x, y = float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h))
            c = int(rng.integers(1, 4))
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            if rng.random() < 0.85:
                j = rng.normal(0, 3, 4)
                dets.append({"image_id": im["id"], "category_id": c, "bbox": [x + j[0], y + j[1], w + j[2], h + j[3]],
                             "score": float(rng.uniform(0.2, 1))})
        dets.append({"image_id": im["id"], "category_id": int(rng.integers(1, 4)), "bbox": [5.0, 5.0, 40.0, 40.0],
                     "score": float(rng.uniform(0, 0.5))})
    cats = [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}, {"id": 3, "name": "bus"}]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _stats(gt: dict, dets: list[dict]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = json.loads(json.dumps(gt))
        g.createIndex()
        E = COCOeval(g, g.loadRes(json.loads(json.dumps(dets))), "bbox")
        E.evaluate()
        E.accumulate()
        E.summarize()
    return E.stats


def _as_dataset_file(gt: dict, dets: list[dict]) -> dict:
    """The detections as another tool writes them: a COCO dataset of its own, with its own image and
    category ids (images listed in another order, paths without the folder, categories renumbered from 0)."""
    new_image = {im["id"]: 100 + k for k, im in enumerate(reversed(gt["images"]))}
    new_cat = {"car": 0, "person": 7, "bus": 3}
    old_cat = {c["id"]: c["name"] for c in gt["categories"]}
    return {"info": {"description": "predictions"}, "licenses": [],
            "images": [{"id": new_image[im["id"]], "file_name": im["file_name"].split("/")[-1], "width": 640,
                        "height": 480} for im in gt["images"]],
            "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in new_cat.items()],
            "annotations": [{"id": k + 1, "image_id": new_image[d["image_id"]],
                             "category_id": new_cat[old_cat[d["category_id"]]], "bbox": d["bbox"],
                             "area": d["bbox"][2] * d["bbox"][3], "iscrowd": 0, "score": d["score"]}
                            for k, d in enumerate(dets)]}


def test_eval_json_carries_all_twelve_coco_figures(tmp_path, capsys):
    gt, dets = _gt_and_results()
    stats = _stats(gt, dets)
    assert len(set(np.round(stats, 6))) > 6  # a data set where the figures differ from each other
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--dets", str(tmp_path / "dets.json"),
                 "--json", str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert list(out["coco"]) == ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
                                 "ARl"] == list(COCO_STATS)
    assert [out["coco"][k] for k in COCO_STATS] == pytest.approx(list(stats))
    assert out["mAP"] == stats[0] and out["mAP50"] == stats[1]
    printed = capsys.readouterr().out
    assert f"AP75 {stats[2]:.3f}" in printed and f"AR1/10/100 {stats[6]:.3f} {stats[7]:.3f} {stats[8]:.3f}" in printed


def test_a_figure_with_nothing_to_score_is_null_not_minus_one():
    gt = {"images": [{"id": 1, "width": 640, "height": 480}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 200, 200]}]}  # large only
    r = coco_evaluate(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 200, 200], "score": 0.9}])
    assert r.coco["APl"] == pytest.approx(1.0) and r.coco["APs"] is None and r.coco["APm"] is None
    assert json.loads(json.dumps(r.summary()))["coco"]["ARs"] is None


def test_dets_as_a_coco_dataset_file_with_scores(tmp_path, capsys):
    gt, dets = _gt_and_results()
    stats = _stats(gt, dets)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "preds.json").write_text(json.dumps(_as_dataset_file(gt, dets)))
    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--dets", str(tmp_path / "preds.json"),
                 "--json", str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert [out["coco"][k] for k in COCO_STATS] == pytest.approx(list(stats))  # same as the results list
    assert set(out["per_node"]) == {"car", "person", "bus"}


@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"][2].pop("score"), r"preds\.json: annotations\[2\] has no score"),
    (lambda d: d["categories"].append({"id": 9, "name": "tram"}) or d["annotations"][0].update(category_id=9),
     r"preds\.json: annotations\[0\]\.category_id: category 'tram' is not in the ground truth"),
    (lambda d: d["annotations"][1].update(image_id=555),
     r"preds\.json: annotations\[1\]\.image_id: its image list has no id 555"),
    (lambda d: d.pop("annotations"), r"preds\.json: a detections file is a COCO results list, or a COCO dataset"),
])
def test_bad_dataset_files_of_detections_are_one_line(tmp_path, capsys, change, message):
    gt, dets = _gt_and_results()
    doc = _as_dataset_file(gt, dets)
    change(doc)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "preds.json").write_text(json.dumps(doc))
    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--dets", str(tmp_path / "preds.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("labeler: error: ")
    assert re.search(message, err), err

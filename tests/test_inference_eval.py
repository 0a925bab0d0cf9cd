"""Evaluation: exactly pycocotools' figures on COCO files; per-project scoring on labelled nodes only."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from inference.evaluate import EvalError, coco_evaluate, evaluate_ground_truth, evaluate_workspace
from inference.predictor import Detection
from labeler.cli import main
from projects.workspace import Workspace


def _random_coco(seed=0, n_images=6, n_cats=3):
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": 200, "height": 150} for i in range(n_images)]
    anns, dets = [], []
    for im in images:
        for _ in range(int(rng.integers(1, 6))):
            x, y, w, h = rng.uniform(0, 120), rng.uniform(0, 90), rng.uniform(8, 60), rng.uniform(8, 50)
            c = int(rng.integers(1, n_cats + 1))
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            if rng.random() < 0.8:  # a noisy detection of it
                j = rng.normal(0, 4, 4)
                dets.append({"image_id": im["id"], "category_id": c if rng.random() < 0.85 else 1,
                             "bbox": [x + j[0], y + j[1], max(2, w + j[2]), max(2, h + j[3])],
                             "score": float(rng.uniform(0.05, 1))})
        for _ in range(2):  # false positives
            dets.append({"image_id": im["id"], "category_id": int(rng.integers(1, n_cats + 1)),
                         "bbox": [float(rng.uniform(0, 150)), float(rng.uniform(0, 100)), 20.0, 20.0],
                         "score": float(rng.uniform(0, 0.6))})
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, n_cats + 1)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _pycocotools(gt, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = json.loads(json.dumps(gt))
        g.createIndex()
        E = COCOeval(g, g.loadRes(json.loads(json.dumps(dets))), "bbox")
        E.evaluate()
        E.accumulate()
        E.summarize()
    return E


def test_coco_files_give_exactly_pycocotools_figures(tmp_path):
    gt, dets = _random_coco()
    E = _pycocotools(gt, dets)
    r = coco_evaluate(gt, dets)
    assert r.map == E.stats[0] and r.map50 == E.stats[1]
    assert 0 < r.map < r.map50 < 1
    for k, c in enumerate(E.params.catIds):
        p = E.eval["precision"][0, :, k, 0, -1]
        assert r.per_category[f"c{c}"]["ap50"] == float(np.mean(p[p > -1]))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--dets", str(tmp_path / "dets.json"),
                 "--json", str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["mAP"] == E.stats[0] and out["mAP50"] == E.stats[1]


def test_recall_at_score_counts_matched_ground_truth_above_the_threshold():
    gt = {"images": [{"id": 1, "width": 100, "height": 100}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20]},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20]}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "score": 0.2}]
    assert coco_evaluate(gt, dets, score_threshold=0.3).recall == 0.5
    assert coco_evaluate(gt, dets, score_threshold=0.1).recall == 1.0
    assert coco_evaluate(gt, [], score_threshold=0.1).map50 <= 0  # nothing found


def test_bad_coco_files_are_refused_naming_the_file(tmp_path):
    gt, dets = _random_coco()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "bad.json").write_text("[{")
    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--dets", str(tmp_path / "bad.json")]) == 2
    dets[0]["image_id"] = 999
    with pytest.raises(EvalError, match="image_id 999"):
        coco_evaluate(gt, dets)
    assert main(["eval", "--gt", str(tmp_path / "gt.json")]) == 2


class TruthPredictor:
    """Returns given boxes as detections: a perfect model, plus optional noise detections."""

    node_names: list[str]

    def __init__(self, node_names, per_image, extra=()):
        self.node_names, self.per_image, self.extra, self.i = node_names, per_image, list(extra), 0

    def predict(self, images):
        out = []
        for _ in images:
            out.append([Detection(n, tuple(b), 0.9) for n, b in self.per_image[self.i]] + self.extra)
            self.i += 1
        return out


def test_workspace_eval_scores_each_project_on_the_nodes_it_labels(demo_ws):
    with Workspace.open(demo_ws) as ws:
        sup = ws.super_taxonomy()
        rows = []
        for p in ws.project_names():
            for i in ws.image_ids(p, status="submitted"):
                from projects.split import split_of

                if split_of(ws.image(i)["split_bucket"]) == "train":
                    rows.append([(n, (a["x1"], a["y1"], a["x2"], a["y2"])) for a in ws.annotations(i)
                                 for n in sup.positives(a["node"])])
        # a car detection on every image: on A's images (people only) it must not count as a false positive
        noise = [Detection("car", (1.0, 1.0, 30.0, 30.0), 0.95)]
        perfect = evaluate_workspace(ws, TruthPredictor(sup.names, rows, noise), split="train")
        assert perfect.per_project["A"]["mAP50"] == pytest.approx(1.0)
        assert perfect.per_project["A"]["nodes"] == ["person"]
        assert perfect.per_category["person"]["ap50"] == pytest.approx(1.0)
        assert perfect.per_category["car"]["ap50"] < 1.0  # on B's images the noise is a false positive
        empty = evaluate_workspace(ws, TruthPredictor(sup.names, [[] for _ in rows]), split="train")
        assert empty.recall == 0.0


def test_ground_truth_eval_uses_every_object_and_its_ancestors(demo_ws):
    truth = json.loads((demo_ws / "ground_truth.json").read_text())
    with Workspace.open(demo_ws) as ws:
        sup = ws.super_taxonomy()
        rows = []
        for p in ws.project_names():
            for i in ws.image_ids(p):
                row = ws.image(i)
                from projects.split import split_of

                if split_of(row["split_bucket"]) == "train":
                    rows.append([(n, o["box"]) for o in truth["images"][row["path"]] for n in sup.positives(o["node"])])
        r = evaluate_ground_truth(ws, TruthPredictor(sup.names, rows), demo_ws / "ground_truth.json", split="train",
                                  per_project=True)
        assert r.map50 == pytest.approx(1.0) and r.recall == 1.0
        assert set(r.per_project) == {"A", "B", "C"}
        # A's day scenes hold vehicles nobody at A labels: full ground truth counts them
        assert r.per_project["A"]["per_node"]["vehicle"]["recall"] == 1.0
        assert sum(p["images"] for p in r.per_project.values()) == r.images
        assert "cyclist" not in r.per_category  # no project labels it: no model can learn it
        n_people = sum(1 for objs in rows for n, _ in objs if n == "person")
        assert r.per_category["person"]["gt"] == n_people > 0


def test_localisation_of_found_boxes_and_recall_at_fixed_precision():
    """Box tightness is scored apart from detection: only matched boxes above the threshold count."""
    gt = {"images": [{"id": 1, "width": 200, "height": 200}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [40 * k, 0, 20, 20]}
                          for k in range(4)]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9},     # IoU 1
            {"image_id": 1, "category_id": 1, "bbox": [40, 0, 20, 19], "score": 0.8},    # IoU 0.95
            {"image_id": 1, "category_id": 1, "bbox": [80, 0, 20, 14], "score": 0.7},    # IoU 0.7
            {"image_id": 1, "category_id": 1, "bbox": [120, 0, 20, 20], "score": 0.1},   # below the threshold
            {"image_id": 1, "category_id": 1, "bbox": [0, 100, 20, 20], "score": 0.75}]  # a false positive
    r = coco_evaluate(gt, dets, score_threshold=0.3)
    assert r.localisation["matched"] == 3
    assert r.localisation["iou>=0.9"] == pytest.approx(2 / 3) and r.localisation["iou>=0.95"] == pytest.approx(2 / 3)
    assert r.localisation["median_iou"] == pytest.approx(0.95)
    # ranked: TP, TP, FP, TP, TP -> precision >= 0.9 holds up to recall 0.5 only
    assert r.per_category["a"]["recall_at_p90"] == pytest.approx(0.5)
    assert r.summary()["localisation"]["matched"] == 3

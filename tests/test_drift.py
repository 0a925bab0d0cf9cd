"""Drift by cohort (inference/drift.py, `labeler drift`): cohorts, pycocotools-exact figures, the bootstrap
flag (a shifted cohort is flagged, an unshifted or small one is not), and one-line errors.

A stand-in predictor answers from each image's own boxes (found with a set probability, jittered, plus false
positives), keyed by the image's pixels, so a "shifted" batch is one where it finds fewer objects. One test
runs the shipped demo model end to end through the command line.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_drift_support import ALL, StandIn, add_batch

from inference.drift import (
    DISPLAY_THRESHOLD,
    DriftError,
    drift_report,
    group_cohorts,
    weighted_ap,
)
from inference.evaluate import coco_evaluate, evaluate_workspace
from labeler.cli import main
from projects.activity import submitted_images
from projects.errors import LabelerError
from projects.taxonomy import CustomerTaxonomy, resource_path
from projects.workspace import Workspace


@pytest.fixture
def stream(tmp_path):
    """Project B: day, day, night (shifted: the stand-in finds 30% instead of 90%), in three import runs."""
    ws = Workspace.create(tmp_path / "ws")
    ws.add_project("B", CustomerTaxonomy.load(resource_path("taxonomies", "B.yaml")))
    batches = [add_batch(ws, tmp_path / "ws" / "images", "B", d, 36, 1000 * (k + 1))
               for k, d in enumerate(("day", "day", "night"))]
    rates = {p: (0.3 if k == 2 else 0.9) for k, paths in enumerate(batches) for p in paths}
    yield ws, StandIn(ws, rates), batches
    ws.close()


def test_display_threshold_is_the_windows():
    from labeler.app.prelabels import DEFAULT_THRESHOLD

    assert DISPLAY_THRESHOLD == DEFAULT_THRESHOLD


def test_shifted_import_is_flagged_and_unshifted_one_is_not(stream):
    ws, predictor, batches = stream
    r = drift_report(ws, predictor, by="import", splits=ALL, bootstrap=300)
    assert [c.figures.images for c in r.cohorts] == [36, 36, 36]  # one cohort per import run, oldest first
    assert [c.first for c in r.cohorts] == sorted(c.first for c in r.cohorts)
    day2, night = r.cohorts[1], r.cohorts[2]
    assert night.figures.change < -0.3 and night.figures.change_high < 0 and night.figures.flagged
    assert "project B" in night.flags and any(f.startswith("node ") for f in night.flags)
    assert not day2.flags  # the same domain: no alarm on any row
    assert day2.figures.change_low < 0 < day2.figures.change_high
    assert r.flagged == [night.key]
    assert night.figures.recall < 0.5 < day2.figures.recall  # recall at the display threshold
    d = r.to_dict()
    assert [c["key"] for c in d["cohorts"]] == [c.key for c in r.cohorts] and d["flagged"] == [night.key]
    json.dumps(d, allow_nan=False)  # strict JSON: undefined figures are null, never NaN


def test_figures_are_pycocotools_figures(stream):
    """One cohort of the test split scores exactly as `labeler eval` does (pycocotools)."""
    ws, predictor, _ = stream
    r = drift_report(ws, predictor, cohorts=1, splits=("test",), score_threshold=0.3, bootstrap=0)
    e = evaluate_workspace(ws, predictor, "test", score_threshold=0.3)
    f = r.cohorts[0].figures
    assert f.images == e.images and f.gt == e.gt_boxes
    assert f.mAP50 == pytest.approx(e.map50, abs=1e-12) and f.mAP == pytest.approx(e.map, abs=1e-12)
    assert f.recall == pytest.approx(e.recall, abs=1e-12)
    for node, row in e.per_category.items():
        if row["gt"]:
            assert r.cohorts[0].nodes[node].mAP50 == pytest.approx(row["ap50"], abs=1e-12)
            assert r.cohorts[0].nodes[node].recall == pytest.approx(row["recall"], abs=1e-12)
    assert f.low is None and f.change is None  # no bootstrap asked


def test_a_resampled_image_counts_as_often_as_drawn():
    """The bootstrap's AP with image weights equals pycocotools' AP on the images duplicated that often."""
    rng = np.random.default_rng(3)
    images = [{"id": i + 1, "width": 200, "height": 200} for i in range(6)]
    anns, dets = [], []
    for im in images:
        for slot in range(int(rng.integers(1, 4))):  # boxes apart: a detection can only match its own box
            x, y = 60.0 * slot, 10.0
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": 1, "bbox": [x, y, 30, 30],
                         "area": 900.0, "iscrowd": 0})
            if rng.random() < 0.7:
                dets.append({"image_id": im["id"], "category_id": 1, "bbox": [x + 3, y - 2, 30, 30],
                             "score": float(rng.uniform(0.1, 1))})
        dets.append({"image_id": im["id"], "category_id": 1, "bbox": [100, 150, 20, 20],
                     "score": float(rng.uniform(0, 0.8))})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}
    # our side: detections ranked by score, each a true positive when it overlaps its box at IoU >= 0.5
    order = sorted(range(len(dets)), key=lambda j: -dets[j]["score"])
    img = np.array([dets[j]["image_id"] - 1 for j in order])
    tp = np.array([_iou(dets[j]["bbox"], [a for a in anns if a["image_id"] == dets[j]["image_id"]]) >= 0.5
                   for j in order])
    gt_per_image = np.array([sum(a["image_id"] == im["id"] for a in anns) for im in images], float)
    # several resamples at once (rows), each against pycocotools on the images repeated that often
    weights = np.array([[2, 0, 1, 3, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 6, 0], [1, 2, 0, 0, 2, 1],
                        [0, 0, 0, 0, 0, 0]], float)
    got = weighted_ap(weights, img, tp, ~tp, weights @ gt_per_image)
    for row, ap in zip(weights, got):
        if not row.any():
            assert np.isnan(ap)  # no ground truth: undefined, as pycocotools' -1
            continue
        dup_images, dup_anns, dup_dets = [], [], []
        for i, im in enumerate(images):
            for _copy in range(int(row[i])):
                new = len(dup_images) + 1
                dup_images.append({**im, "id": new})
                dup_anns += [{**a, "id": len(dup_anns) + k + 1, "image_id": new}
                             for k, a in enumerate(a for a in anns if a["image_id"] == im["id"])]
                dup_dets += [{**d, "image_id": new} for d in dets if d["image_id"] == im["id"]]
        expected = coco_evaluate({"images": dup_images, "annotations": dup_anns, "categories": gt["categories"]},
                                 dup_dets).per_category["a"]["ap50"]
        assert ap == pytest.approx(expected, abs=1e-12)
    assert got[0] != got[1]  # the weights matter
    assert got[1] == pytest.approx(coco_evaluate(gt, dets).per_category["a"]["ap50"], abs=1e-12)


def _iou(box, anns) -> float:
    x, y, w, h = box
    best = 0.0
    for a in anns:
        ax, ay, aw, ah = a["bbox"]
        iw, ih = max(0, min(x + w, ax + aw) - max(x, ax)), max(0, min(y + h, ay + ah) - max(y, ay))
        best = max(best, iw * ih / (w * h + aw * ah - iw * ih))
    return best


def test_small_shifted_cohort_raises_no_false_alarm(stream, tmp_path):
    """Four images on which the model does badly drop the figure a lot, but four images prove little: the
    row is shown with its drop and not flagged; the same drop on 36 images is."""
    ws, predictor, batches = stream
    few = add_batch(ws, tmp_path / "ws" / "images", "B", "fog", 4, 9000)
    predictor = StandIn(ws, {**{p: (0.3 if k == 2 else 0.9) for k, b in enumerate(batches) for p in b},
                             **{p: 0.2 for p in few}})
    r = drift_report(ws, predictor, by="import", splits=ALL, bootstrap=300)
    small = r.cohorts[-1]
    assert small.figures.images == 4 and small.figures.change < -0.2
    assert not small.flags
    assert r.flagged == [r.cohorts[2].key]


def test_bootstrap_interval_keeps_unshifted_noise_unflagged(stream):
    """Equal cohorts of one domain: their figures wander by chance; with the bootstrap nothing is flagged,
    although some point drops pass the threshold (what a plain threshold would have flagged)."""
    ws, predictor, batches = stream
    day = [p for b in batches[:2] for p in b]
    predictor = StandIn(ws, {p: 0.6 for p in day})
    r = drift_report(ws, predictor, cohorts=6, splits=ALL, projects=["B"], bootstrap=300, threshold=0.03)
    changes = [f.change for c in r.cohorts[1:3] for f in [c.figures, *c.nodes.values()] if f.change is not None]
    assert min(changes) < -0.03  # a plain threshold would raise an alarm
    assert not any(c.flags for c in r.cohorts[1:3])  # the unshifted day cohorts (night is cohorts 5-6)


def test_cohorts_by_week_and_equal_size(stream):
    ws, predictor, _ = stream
    ids = [r["id"] for r in submitted_images(ws)]
    weeks = ["2026-01-05T10:00:00.000+00:00", "2026-01-14T10:00:00.000+00:00", "2026-01-21T10:00:00.000+00:00"]
    with ws.transaction():
        for k, image_id in enumerate(ids):
            ws.db.execute("UPDATE images SET status_updated_at=? WHERE id=?", [weeks[k * 3 // len(ids)], image_id])
    r = drift_report(ws, predictor, by="submit-week", splits=ALL, bootstrap=0)
    assert [c.key for c in r.cohorts] == ["2026-W02", "2026-W03", "2026-W04"]
    rows = submitted_images(ws)
    groups = group_cohorts(rows, "cohorts", 5)
    sizes = [len(g[2]) for g in groups]
    assert sum(sizes) == len(rows) and max(sizes) - min(sizes) <= 1
    assert [i for g in groups for i in g[2]] == list(range(len(rows)))  # contiguous, in submit order
    merged = group_cohorts(rows[:10], "import", min_images=20)
    assert len(merged) == 1 and len(merged[0][2]) == 10


def test_unreadable_image_is_skipped_and_named(stream):
    ws, predictor, batches = stream
    bad = ws.image_path(batches[0][0])
    bad.write_bytes(b"not a jpeg")
    r = drift_report(ws, predictor, by="import", splits=ALL, bootstrap=0)
    assert r.cohorts[0].figures.images == 35
    assert len(r.skipped) == 1 and str(bad) in r.skipped[0]


@pytest.mark.parametrize("kwargs,message", [
    ({"by": "week"}, "unknown cohort kind"), ({"cohorts": 0}, "whole number >= 1"),
    ({"metric": "AP"}, "unknown metric"), ({"confidence": 1.0}, "strictly between 0 and 1"),
    ({"splits": ("holdout",)}, "unknown split"), ({"bootstrap": -1}, "bootstrap"),
    ({"score_threshold": 2}, "score threshold"), ({"projects": ["Z"]}, "no project named 'Z'"),
])
def test_bad_options_are_labeler_errors(stream, kwargs, message):
    ws, predictor, _ = stream
    with pytest.raises(LabelerError, match=message):
        drift_report(ws, predictor, **kwargs)


def test_nothing_held_out_is_one_line(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    ws.add_project("B", CustomerTaxonomy.load(resource_path("taxonomies", "B.yaml")))
    with pytest.raises(DriftError, match="no submitted images in the val/test split"):
        drift_report(ws, StandIn(ws, {}))
    ws.close()


# --- the command line -----------------------------------------------------------------------------------
DEMO_MODEL = resource_path("models", "demo")


def test_cli_with_the_demo_model_writes_cohorts_oldest_first(demo_ws, tmp_path, capsys):
    ws = tmp_path / "ws"
    shutil.copytree(demo_ws, ws)
    out = tmp_path / "drift.json"
    assert main(["drift", str(ws), "--model", str(DEMO_MODEL), "--split", "all", "--cohorts", "2", "--project", "A",
                 "--bootstrap", "50", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cohort 1/2" in text and "cohort 2/2" in text and "recall@0.4" in text
    d = json.loads(out.read_text())
    assert [c["key"] for c in d["cohorts"]] == ["1/2", "2/2"]
    assert d["cohorts"][0]["last"] <= d["cohorts"][1]["first"]
    assert d["model"] and 0 < d["cohorts"][0]["mAP50"] <= 1 and set(d["cohorts"][0]["projects"]) == {"A"}


def test_cli_flags_and_fail_on_drift(stream, monkeypatch, capsys, tmp_path):
    ws, predictor, _ = stream
    import labeler.commands.drift as cmd

    monkeypatch.setattr(cmd, "load_predictor", lambda ws_, model: predictor)
    args = ["drift", str(ws.folder), "--by", "import", "--split", "all", "--bootstrap", "200"]
    assert main(args) == 0
    assert "DRIFT: imported" in capsys.readouterr().out
    assert main([*args, "--fail-on-drift"]) == 1


@pytest.mark.parametrize("argv,message", [
    (["--cohorts", "0"], "whole number >= 1"),
    (["--by", "import", "--cohorts", "3"], "give --by or --cohorts, not both"),
    (["--threshold", "-1"], "drop threshold"),
])
def test_cli_bad_input_is_one_line(demo_ws, argv, message, capsys):
    assert main(["drift", str(demo_ws), "--model", str(DEMO_MODEL), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("labeler: error:") and message in err[0]


def test_cli_without_a_registered_model_is_one_line(demo_ws, capsys):
    assert main(["drift", str(demo_ws)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("labeler: error:") and "no model registered" in err and "\n" not in err

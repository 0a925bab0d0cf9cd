"""Gold images and annotator quality; the v1 -> v2 migration; the lint, gold and quality commands."""

from __future__ import annotations

import json

import pytest

from labeler.cli import main
from projects import schema, workspace
from projects.imaging import ImageInfo
from projects.quality import annotator_summary, score_annotations, score_submission
from projects.taxonomy import CustomerTaxonomy, resource_path
from projects.workspace import Workspace


def box(label, b):
    return {"label": label, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3]}


REF = [box("Car", (0, 0, 100, 50)), box("Car", (90, 0, 190, 50)), box("Truck", (200, 0, 300, 100))]


def test_perfect_annotation_scores_one():
    s = score_annotations(REF, REF)
    assert (s.precision, s.recall, s.mean_iou, s.tp, s.fp, s.fn) == (1.0, 1.0, 1.0, 3, 0, 0)


def test_missed_wrong_class_and_loose_boxes():
    drawn = [box("Car", (0, 0, 100, 50)),  # exact
             box("Car", (200, 0, 300, 100)),  # on the truck, wrong class: a false positive, and the truck a miss
             box("Car", (80, 0, 200, 60))]  # loose on the second car: IoU 0.69
    s = score_annotations(drawn, REF)
    assert (s.tp, s.fp, s.fn) == (2, 1, 1)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3)
    assert s.mean_iou == pytest.approx((1.0 + 5000 / 7200) / 2)


def test_boxes_under_iou_half_do_not_count():
    s = score_annotations([box("Car", (50, 0, 150, 50))], REF[:1])  # IoU 1/3
    assert (s.tp, s.fp, s.fn, s.mean_iou) == (0, 1, 1, None)


def test_matching_is_one_to_one_and_optimal():
    """Greedy matching would give the first drawn box the first car (IoU 0.82) and leave the second drawn
    box nothing; the optimal assignment matches both."""
    ref = [box("Car", (0, 0, 100, 50)), box("Car", (15, 0, 115, 50))]
    drawn = [box("Car", (8, 0, 108, 50)), box("Car", (0, 0, 90, 50))]
    assert score_annotations(drawn, ref).tp == 2


def test_empty_cases_are_undefined_not_invented():
    s = score_annotations([], REF)
    assert (s.precision, s.recall, s.fn) == (None, 0.0, 3)
    s = score_annotations([], [])
    assert (s.precision, s.recall, s.mean_iou) == (None, None, None)


@pytest.fixture
def gold_ws(store):
    """On SQLite and on PostgreSQL (tests/conftest.py `store`)."""
    ws = store.create()
    yield _gold(ws)
    ws.close()


def _gold(ws):
    ws.add_project("B", CustomerTaxonomy.load(resource_path("taxonomies", "B.yaml")))
    labels = {lab["name"]: lab["id"] for lab in ws.labels("B")}
    ids = ws.insert_images(ws.project_id("B"), [ImageInfo(ws.folder / f"{k}.jpg", f"{k}" * 64, 400, 300)
                                                 for k in range(3)]).added
    for r in REF:
        ws.add_annotation(ids[0], labels[r["label"]], (r["x1"], r["y1"], r["x2"], r["y2"]), author="lead")
    ws.set_status(ids[0], "submitted")
    return ws, ids, labels


def test_gold_image_is_scored_on_submit(gold_ws):
    ws, ids, labels = gold_ws
    assert ws.mark_gold(ids[0], author="lead", requeue=True) == 3
    assert ws.annotations(ids[0]) == [] and ws.image(ids[0])["status"] == "unlabeled"
    assert [r["label"] for r in ws.gold_reference(ids[0])] == ["Car", "Car", "Truck"]
    assert ws.gold_reference(ids[1]) is None and ws.gold_image_ids("B") == [ids[0]]
    ws.add_annotation(ids[0], labels["Car"], (0, 0, 100, 50), author="ann")
    ws.add_annotation(ids[0], labels["Truck"], (200, 0, 300, 100), author="ann")
    s = score_submission(ws, ids[0])
    assert (s.tp, s.fp, s.fn) == (2, 0, 1)
    (row,) = ws.quality_scores("B")
    assert row["author"] == "ann" and row["recall"] == pytest.approx(2 / 3) and row["precision"] == 1.0
    assert score_submission(ws, ids[1]) is None  # not gold: nothing stored
    assert len(ws.quality_scores()) == 1


def test_annotator_summary_micro_averages_over_time(gold_ws):
    ws, ids, labels = gold_ws
    ws.mark_gold(ids[0], requeue=True)
    for author, boxes in (("ann", REF), ("bob", REF[:1]), ("ann", REF[:2])):
        for d in ws.annotations(ids[0]):
            ws.delete_annotation(d["id"])
        for r in boxes:
            ws.add_annotation(ids[0], labels[r["label"]], (r["x1"], r["y1"], r["x2"], r["y2"]), author=author)
        score_submission(ws, ids[0])
    summary = {a["author"]: a for a in annotator_summary(ws.quality_scores())}
    assert summary["ann"]["gold_images"] == 2
    assert summary["ann"]["recall"] == pytest.approx(5 / 6) and summary["ann"]["precision"] == 1.0
    assert [h["recall"] for h in summary["ann"]["history"]] == pytest.approx([1.0, 2 / 3])
    assert summary["bob"]["recall"] == pytest.approx(1 / 3)


def test_v1_workspace_migrates_to_v2_keeping_its_data(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(workspace, "MIGRATIONS", [schema._v1])
        m.setattr(workspace, "SCHEMA_VERSION", 1)
        w = Workspace.create(tmp_path / "w")
        w.add_project("A", CustomerTaxonomy.load(resource_path("taxonomies", "A.yaml")))
        (img,) = w.insert_images(w.project_id("A"), [ImageInfo(tmp_path / "a.jpg", "a" * 64, 64, 48)]).added
        w.add_annotation(img, w.labels("A")[0]["id"], (1, 2, 30, 40))
        w.db["lint_findings"].insert({"image_id": img, "kind": "tiny", "score": 0.75, "message": "old",
                                      "state": "open", "created_at": "2024-01-01"})
        assert w.schema_version == 1 and "gold_images" not in w.db.table_names()
        w.close()
    with Workspace.open(tmp_path / "w") as w:
        assert w.schema_version == schema.SCHEMA_VERSION
        assert {"lint_images", "gold_images", "gold_boxes", "quality_scores"} <= set(w.db.table_names())
        assert len(w.annotations(img)) == 1
        (old,) = w.lint_findings(img)
        assert old["message"] == "old" and old["suggested_label"] is None
        assert w.mark_gold(img) == 1 and len(w.gold_reference(img)) == 1


# --- commands -----------------------------------------------------------------------------------------------
def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_gold_and_quality_commands(gold_ws, capsys):
    ws, ids, labels = gold_ws
    folder = ws.location  # the folder, or the team workspace's URL
    code, _, err = run(capsys, "gold", "add", folder, "--project", "B", str(ids[1]))
    assert code == 2 and "no annotations" in err
    code, _, err = run(capsys, "gold", "add", folder, "--project", "B", "nope.jpg")
    assert code == 2 and "nope.jpg: no such image in project 'B'" in err
    code, out, _ = run(capsys, "gold", "add", folder, "--project", "B", "0.jpg", "--requeue")
    assert code == 0 and "3 reference boxes" in out
    code, out, _ = run(capsys, "quality", folder)
    assert code == 0 and "B: 1" in out and "no gold image has been submitted" in out
    ws.add_annotation(ids[0], labels["Car"], (0, 0, 100, 50), author="ann")
    score_submission(ws, ids[0])
    code, out, _ = run(capsys, "quality", folder, "--json")
    data = json.loads(out)
    assert data["gold_images"] == {"B": 1}
    (ann,) = data["annotators"]
    assert ann["author"] == "ann" and ann["recall"] == pytest.approx(1 / 3) and ann["precision"] == 1.0
    code, out, _ = run(capsys, "quality", folder)
    assert "ann" in out and "33.3%" in out
    assert run(capsys, "gold", "remove", folder, "--project", "B", str(ids[0]))[0] == 0
    assert ws.gold_image_ids("B") == [] and len(ws.quality_scores()) == 1


def test_lint_command(gold_ws, capsys):
    ws, ids, labels = gold_ws
    folder = ws.location  # the folder, or the team workspace's URL
    model = ws.register_model("m1", "nowhere")
    ws.save_predictions(ids[0], model, [("car", (0, 0, 100, 50), 0.9), ("car", (90, 0, 190, 50), 0.9),
                                        ("truck", (200, 0, 300, 100), 0.9), ("bus", (320, 100, 390, 200), 0.9)])
    ws.add_annotation(ids[1], labels["Car"], (10, 10, 12, 60))  # tiny; image 1 has no predictions yet
    code, out, err = run(capsys, "lint", folder, "--project", "B", "--json")
    assert code == 2 and "could not be loaded" in err  # image 1 needs the model, which is not there
    code, out, err = run(capsys, "lint", folder, "--project", "B", "--rules-only", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["model"] is None and data["counts"]["tiny"] == 1
    assert data["ranking"][0]["image_id"] == ids[1]
    ws.set_status(ids[1], "unlabeled")  # lint only image 0, predicted already
    for a in ws.annotations(ids[1]):
        ws.delete_annotation(a["id"])
    code, out, err = run(capsys, "lint", folder, "--project", "B", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["model"] == "m1" and data["images"] == 1 and data["counts"]["missed"] == 1
    assert data["calibration"] is None  # four predictions are too few to calibrate on
    (f,) = data["ranking"][0]["findings"]
    assert f["kind"] == "missed" and f["suggested_label"] == "Bus" and f["box"] == [320, 100, 390, 200]
    code, out, _ = run(capsys, "lint", folder, "--project", "B")
    assert code == 0 and "missed: 1" in out and "0.jpg" in out and "raw scores used" in out
    assert run(capsys, "lint", folder, "--project", "B", "--threshold", "2")[0] == 2
    with pytest.raises(SystemExit):
        run(capsys, "lint", folder, "--project", "B", "--status", "done")
    assert "unknown status done" in capsys.readouterr().err
    code, _, err = run(capsys, "lint", folder, "--project", "Nope")
    assert code == 2 and "no project named 'Nope'" in err

"""Lint on submit in the labeling window: an open finding stops the submit and is shown; the annotator
fixes or dismisses it, or confirms the image by submitting again. Gold images are scored on submit."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from test_gui_support import copy_workspace

from labeler.app.findings import install
from labeler.app.loader import ImageLoader
from labeler.app.main_window import MainWindow
from labeler.app.session import LabelingSession
from labeler.app.window_runner import build_window
from projects.workspace import Workspace


@pytest.fixture
def folder(demo_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELER_SETTINGS", str(tmp_path / "settings.ini"))
    return copy_workspace(demo_ws, tmp_path / "ws")


def prepare(folder, dropped: int = 1) -> tuple[int, list[dict]]:
    """An unlabeled image of project B gets its true boxes minus `dropped` of them; a model (registered,
    never loaded) has 'predicted' every true box. Returns the image id and the boxes left out."""
    truth = json.loads((folder / "ground_truth.json").read_text())["images"]
    with Workspace.open(folder) as ws:
        view = ws.project_view("B")
        labels = {lab["name"]: lab["id"] for lab in ws.labels("B")}
        for image_id in ws.image_ids("B", "unlabeled"):
            objs = [o for o in truth[ws.image(image_id)["path"]] if view.label_for(o["node"]) is not None]
            if len(objs) >= 2:
                break
        else:
            pytest.skip("no unlabeled image of B with two objects in this demo")
        model = ws.register_model("lint-test", "nowhere")
        ws.save_predictions(image_id, model, [(o["node"], tuple(o["box"]), 0.9) for o in objs])
        for o in objs[dropped:]:
            ws.add_annotation(image_id, labels[view.label_for(o["node"]).name], tuple(o["box"]), author="ann")
    return image_id, objs[:dropped]


def open_window(qtbot, folder, image_id, composed: bool = False) -> MainWindow:
    """The window with the lint extension alone, or (`composed`) as `labeler open` builds it, pre-labels
    included (its worker finds the registered test model unloadable and works without pre-labels)."""
    session = LabelingSession(Workspace.open(folder), "B")
    if composed:
        w = build_window(session)
        controller = w.findings
    else:
        w = MainWindow(session, ImageLoader())
        controller = install(w)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    assert session.go_to_image(image_id)
    qtbot.waitUntil(lambda: w.ready_image_id == image_id, timeout=10000)
    qtbot.waitUntil(controller.calibrated, timeout=30000)  # fitted in the worker's thread, asked for at once
    assert controller.panel.rows() == []
    return w


def press_submit(qtbot, w) -> None:
    w.canvas.setFocus()
    QTest.keyClick(w.canvas, Qt.Key.Key_Return)


@pytest.fixture
def db(folder):
    ws = Workspace.open(folder)
    yield ws
    ws.close()


@pytest.mark.parametrize("composed", [False, True], ids=["lint-alone", "as-labeler-open-builds-it"])
def test_submit_with_an_open_finding_shows_it_and_a_fix_lets_it_through(qtbot, folder, db, composed):
    image_id, (missed,) = prepare(folder)
    w = open_window(qtbot, folder, image_id, composed)
    c = w.findings
    press_submit(qtbot, w)
    assert db.image(image_id)["status"] == "in_progress"  # not submitted
    assert w.session.image["id"] == image_id
    (row,) = c.panel.rows()
    assert row.kind == "missed" and row.box == tuple(missed["box"]) and row.state == "open"
    assert c.panel.banner.isVisible() and "1 open finding" in c.panel.banner.text()
    assert c.dock.isVisible() and c.panel.current_id() == row.id
    assert c.panel.list.hasFocus()
    n_boxes = len(db.annotations(image_id))
    QTest.keyClick(c.panel.list, Qt.Key.Key_F, Qt.KeyboardModifier.ShiftModifier)  # fix: the model's box and label
    added = db.annotations(image_id)
    assert len(added) == n_boxes + 1
    new = max(added, key=lambda a: a["id"])
    assert (new["x1"], new["y1"], new["x2"], new["y2"]) == pytest.approx(missed["box"])
    assert new["provenance"] == "prelabel_accepted"
    assert [f["state"] for f in db.lint_findings(image_id)] == ["fixed"]
    press_submit(qtbot, w)
    assert db.image(image_id)["status"] == "submitted"
    assert w.session.image["id"] != image_id  # moved on
    w.close()
    w.session.ws.close()


def test_submitting_again_confirms_and_dismisses(qtbot, folder, db):
    image_id, _ = prepare(folder)
    w = open_window(qtbot, folder, image_id)
    press_submit(qtbot, w)
    assert db.image(image_id)["status"] == "in_progress"
    press_submit(qtbot, w)  # confirm the image as it is
    assert db.image(image_id)["status"] == "submitted"
    assert [f["state"] for f in db.lint_findings(image_id)] == ["dismissed"]
    w.session.go_to_image(image_id)
    assert [r.state for r in w.findings.panel.rows()] == ["dismissed"]
    w.close()
    w.session.ws.close()


def test_dismiss_key_and_clean_image_submits_at_once(qtbot, folder, db):
    image_id, _ = prepare(folder)
    w = open_window(qtbot, folder, image_id)
    c = w.findings
    press_submit(qtbot, w)
    QTest.keyClick(c.panel.list, Qt.Key.Key_X)
    assert [f["state"] for f in db.lint_findings(image_id)] == ["dismissed"]
    assert "submit again" in c.panel.banner.text()
    press_submit(qtbot, w)
    assert db.image(image_id)["status"] == "submitted"
    w.close()
    w.session.ws.close()


def test_gold_image_is_scored_when_submitted(qtbot, folder, db):
    image_id, _ = prepare(folder, dropped=0)  # every box right: no finding, the submit goes through
    db.mark_gold(image_id, author="lead")  # the reference: the boxes as they are now
    w = open_window(qtbot, folder, image_id)
    c = w.findings
    w.canvas.select([w.session.annotations[0]["id"]])
    w.session.delete([w.session.annotations[0]["id"]])  # the annotator misses one of them
    press_submit(qtbot, w)  # the linter points at it: not submitted, not scored
    assert [r.kind for r in c.panel.rows()] == ["missed"] and db.quality_scores() == []
    press_submit(qtbot, w)  # the annotator confirms anyway
    assert db.image(image_id)["status"] == "submitted"
    (score,) = db.quality_scores("B")
    assert score["fn"] == 1 and score["fp"] == 0 and score["precision"] == 1.0
    assert c.quality.table.rowCount() == 1 and c.quality.cell_text(0, "Annotator") == score["author"]
    w.close()
    w.session.ws.close()

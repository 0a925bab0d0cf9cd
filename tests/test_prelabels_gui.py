"""Pre-labels and click-to-refine in the real window, with the model shipped in resources/models/demo.

Every edit is checked through a second database connection: what the window shows is what is stored.
"""

from __future__ import annotations

import shutil

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from test_gui_support import click, copy_workspace, drag

from inference.registry import register_checkpoint
from labeler.app.prelabels import REFINED_ID
from labeler.app.session import LabelingSession
from labeler.app.window_runner import build_window
from projects.taxonomy import resource_path
from projects.workspace import Workspace

SHIFT, ALT, CTRL = (Qt.KeyboardModifier.ShiftModifier, Qt.KeyboardModifier.AltModifier,
                    Qt.KeyboardModifier.ControlModifier)
MODEL = resource_path("models", "demo")


@pytest.fixture
def ws_model(demo_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELER_SETTINGS", str(tmp_path / "settings.ini"))
    folder = copy_workspace(demo_ws, tmp_path / "ws")
    shutil.copytree(MODEL, folder / "models" / "demo")
    with Workspace.open(folder) as ws:
        register_checkpoint(ws, folder / "models" / "demo")
    return folder


@pytest.fixture
def db(ws_model):
    ws = Workspace.open(ws_model)
    yield ws
    ws.close()


def open_window(qtbot, folder, project):
    w = build_window(LabelingSession(Workspace.open(folder), project))
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    w.prelabels.set_threshold(0.2)
    return w


def wait_proposals(qtbot, w, minimum: int = 1, max_images: int = 8):
    """Go forward until an image shows at least `minimum` proposals (the model misses some images)."""
    for _ in range(max_images):
        assert w.prelabels.wait_for_current(60)
        if len(w.canvas.proposal_boxes()) >= minimum:
            return
        w.session.next()
    pytest.fail(f"no image with {minimum} proposals among the first {max_images}")


@pytest.fixture
def window(qtbot, ws_model):
    w = open_window(qtbot, ws_model, "B")
    yield w
    w.close()
    w.session.ws.close()


def center(box):
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def select_a_proposal(w) -> tuple[int, tuple]:
    """Click the centre of the largest proposal (its centre is far from its resize handles); nested
    proposals pick the smallest under the click."""
    box = max(w.canvas.proposal_boxes().values(), key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    click(w.canvas, center(box))
    (pid,) = w.canvas.selected_proposal_ids()
    return pid, w.canvas.proposal_boxes()[pid]


def test_proposals_use_the_projects_names_and_people_only_never_sees_vehicles(qtbot, ws_model):
    seen = {}
    for project, allowed in (("A", {"Human"}), ("C", {"Vehicle"})):
        w = open_window(qtbot, ws_model, project)
        nodes, labels = set(), set()
        for _ in range(6):
            assert w.prelabels.wait_for_current(60)
            nodes |= {d.node for d in w.prelabels.detections[w.session.image["id"]] if d.score >= 0.2}
            labels |= {p.label for p in w.prelabels.proposals.values()}
            w.session.next()
        seen[project] = nodes
        assert labels and labels <= allowed, (project, labels)
        w.close()
        w.session.ws.close()
    # the model did detect vehicles on A's images and people on C's: they were filtered, not absent
    assert seen["A"] & {"car", "truck", "bus", "vehicle"} or seen["C"] & {"person", "pedestrian_adult"}


def test_enter_accepts_the_selected_proposal_and_undo_restores_it(window, db, qtbot):
    wait_proposals(qtbot, window)
    pid, box = select_a_proposal(window)
    prop = window.prelabels.proposals[pid]
    image_id = window.session.image["id"]
    QTest.keyClick(window.canvas, Qt.Key.Key_Return)
    (row,) = [a for a in db.annotations(image_id) if a["provenance"] == "prelabel_accepted"]
    assert row["label"] == prop.label and row["model_id"] == db.latest_model()["id"]
    assert (row["x1"], row["y1"]) == pytest.approx(prop.box[:2], abs=0.5)  # whole pixels
    assert pid not in window.canvas.proposal_boxes()
    assert window.session.image["id"] == image_id  # Enter accepted; it did not submit
    QTest.keyClick(window.canvas, Qt.Key.Key_Z, CTRL)
    assert not [a for a in db.annotations(image_id) if a["provenance"] == "prelabel_accepted"]
    assert pid in window.canvas.proposal_boxes()


def test_shift_enter_accepts_all_above_threshold_as_one_undo_step(window, db, qtbot):
    wait_proposals(qtbot, window, minimum=2)
    image_id = window.session.image["id"]
    n = len(window.canvas.proposal_boxes())
    QTest.keyClick(window.canvas, Qt.Key.Key_Return, SHIFT)
    rows = [a for a in db.annotations(image_id) if a["provenance"] == "prelabel_accepted"]
    assert len(rows) == n and window.canvas.proposal_boxes() == {}
    QTest.keyClick(window.canvas, Qt.Key.Key_Z, CTRL)
    assert [a for a in db.annotations(image_id) if a["provenance"] == "prelabel_accepted"] == []
    assert len(window.canvas.proposal_boxes()) == n


def test_delete_rejects_a_proposal_without_touching_annotations(window, db, qtbot):
    wait_proposals(qtbot, window)
    image_id = window.session.image["id"]
    before = db.annotations(image_id, include_deleted=True)
    pid, box = select_a_proposal(window)
    QTest.keyClick(window.canvas, Qt.Key.Key_Delete)
    assert pid not in window.canvas.proposal_boxes()
    assert db.annotations(image_id, include_deleted=True) == before
    QTest.keyClick(window.canvas, Qt.Key.Key_Z, CTRL)
    assert pid in window.canvas.proposal_boxes()


def test_dragging_a_proposal_makes_an_adjusted_annotation(window, db, qtbot):
    wait_proposals(qtbot, window)
    pid, box = select_a_proposal(window)
    c = center(box)
    w, h = window.session.image["width"], window.session.image["height"]
    dx, dy = (6 if c[0] < w / 2 else -6), (4 if c[1] < h / 2 else -4)  # towards the middle: never clamped
    drag(window.canvas, c, (c[0] + dx, c[1] + dy))
    (row,) = [a for a in db.annotations(window.session.image["id"]) if a["provenance"] == "prelabel_adjusted"]
    # the drag moves by whole view-mapped pixels (±1), then the store keeps whole pixels (±0.5)
    assert row["x1"] == pytest.approx(box[0] + dx, abs=1.51) and row["y1"] == pytest.approx(box[1] + dy, abs=1.51)
    assert pid not in window.canvas.proposal_boxes()


def test_alt_click_refines_to_a_proposal_and_enter_accepts_it(window, db, qtbot):
    wait_proposals(qtbot, window)
    image_id = window.session.image["id"]
    pid, box = next(iter(window.canvas.proposal_boxes().items()))
    window.prelabels.set_threshold(0.95)  # hide the proposals: the refine answer is the only one
    click(window.canvas, center(box), ALT)
    qtbot.waitUntil(lambda: REFINED_ID in window.canvas.proposal_boxes(), timeout=60000)
    refined = window.canvas.proposal_boxes()[REFINED_ID]
    assert window.canvas.selected_proposal_ids() == [REFINED_ID]
    QTest.keyClick(window.canvas, Qt.Key.Key_Return)
    (row,) = [a for a in db.annotations(image_id) if a["provenance"] == "refined"]
    assert (row["x1"], row["y1"], row["x2"], row["y2"]) == pytest.approx(refined, abs=0.5)  # whole pixels
    assert row["label"] in {lab["name"] for lab in db.labels("B")}


def test_a_broken_model_leaves_the_app_usable(qtbot, demo_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELER_SETTINGS", str(tmp_path / "settings.ini"))
    folder = copy_workspace(demo_ws, tmp_path / "ws")
    shutil.copytree(MODEL, folder / "models" / "broken")
    with Workspace.open(folder) as ws:
        register_checkpoint(ws, folder / "models" / "broken")  # verified, then its weights break on disk
    (folder / "models" / "broken" / "model.safetensors").write_bytes(b"\x00" * 64)
    w = open_window(qtbot, folder, "B")
    qtbot.waitUntil(lambda: "could not be loaded" in w.prelabels.status.text(), timeout=60000)
    image_id = w.session.image["id"]
    qtbot.waitUntil(lambda: w.ready_image_id == image_id, timeout=10000)
    drag(w.canvas, (20, 20), (80, 90))
    with Workspace.open(folder) as db:
        assert [a["provenance"] for a in db.annotations(image_id)][-1] == "manual"
    assert w.canvas.proposal_boxes() == {}
    w.close()
    w.session.ws.close()

"""Pre-labels for a full working day (issue 14, items 4, 5, 7, 8 and two of 9), in the real window.

The model is a stand-in worker that answers at once with fixed detections (and a fixed refine answer), so
each test shows exactly the situation that was reported; every edit is checked in the database.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from PySide6.QtCore import QObject, QPointF, Qt, Signal
from PySide6.QtTest import QTest
from test_gui_support import click, copy_workspace, drag

from inference.refine import Proposal as RefineProposal
from inference.worker import Result
from labeler.app import prelabels
from labeler.app.prelabels import REFINED_ID
from labeler.app.session import LabelingSession
from labeler.app.window_runner import build_window
from projects.values import Detection, snap_box
from projects.workspace import Workspace

ALT, CTRL, SHIFT = (Qt.KeyboardModifier.AltModifier, Qt.KeyboardModifier.ControlModifier,
                    Qt.KeyboardModifier.ShiftModifier)
CAR = Detection("car", (100.4, 60.6, 190.903, 140.2), 0.8)
ADULT = Detection("pedestrian_adult", (300.2, 50.3, 340.6, 150.7), 0.7)


class FakeWorker(QObject):
    """The prediction worker's interface, answering at once: the same detections for every image."""

    result_ready = Signal(object)
    status_changed = Signal(str)
    stopped = Signal(str)
    job_done = Signal(object, object)

    def __init__(self, model_id: int, detections: list[Detection], refine_answer=None):
        super().__init__()
        self.model_id, self.detections, self.refine_answer = model_id, list(detections), refine_answer
        self.last_status = "model ready"
        self.service = SimpleNamespace(predictor=None)

    def start(self):
        return self

    def stop(self, timeout: float = 10.0) -> None:
        pass

    def show(self, image_id: int, prefetch=()) -> None:
        self.result_ready.emit(Result(image_id, self.model_id, f"v{self.model_id}", list(self.detections), True))

    def run_job(self, tag, job) -> None:
        self.job_done.emit(tag, self.refine_answer)


@pytest.fixture
def folder(demo_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELER_SETTINGS", str(tmp_path / "settings.ini"))
    folder = copy_workspace(demo_ws, tmp_path / "ws")
    with Workspace.open(folder) as ws:
        ws.register_model("v1", folder / "models" / "v1")
        ws.register_model("v2", folder / "models" / "v2")
    return folder


@pytest.fixture
def db(folder):
    ws = Workspace.open(folder)
    yield ws
    ws.close()


@pytest.fixture
def opened(qtbot, folder):
    """open(worker) -> a shown window of project B on its first unlabeled image (no boxes yet), whose
    pre-labels come from `worker`; closed at the end."""
    windows = []

    def open_(worker: FakeWorker):
        w = build_window(LabelingSession(Workspace.open(folder), "B"), prelabels=False, lint=False)
        prelabels.install(w, worker)
        qtbot.addWidget(w)
        w.resize(1200, 800)
        w.show()
        qtbot.waitExposed(w)
        w.activateWindow()
        image_id = w.session.ws.image_ids("B", "unlabeled")[0]
        w.session.go_to_image(image_id)
        qtbot.waitUntil(lambda: w.ready_image_id == image_id, timeout=10000)
        windows.append(w)
        return w

    yield open_
    for w in windows:
        w.close()
        w.session.ws.close()


def model_id(db, version: str) -> int:
    return db.model(version)["id"]


def center(box):
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def proposal_of(w, node: str) -> int:
    (pid,) = [k for k, p in w.prelabels.proposals.items() if p.node == node]
    return pid


def select_proposal(w, node: str) -> int:
    pid = proposal_of(w, node)
    click(w.canvas, center(w.canvas.proposal_boxes()[pid]))
    assert w.canvas.selected_proposal_ids() == [pid]
    return pid


def key(w, k, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    QTest.keyClick(w.canvas, k, modifiers)


# --- item 4: rejections are stored per model version ---------------------------------------------
def test_a_rejected_proposal_stays_rejected_after_reopening_for_that_model_version(opened, db):
    v1 = model_id(db, "v1")
    w = opened(FakeWorker(v1, [CAR, ADULT]))
    image_id = w.session.image["id"]
    select_proposal(w, "car")
    key(w, Qt.Key.Key_Delete)
    assert {p.node for p in w.prelabels.proposals.values()} == {"pedestrian_adult"}
    assert w.session.undo_stack.undoText() == "reject pre-label Car"
    assert [(r["node"], r["decision"]) for r in db.proposal_decisions(image_id, v1)] == [("car", "rejected")]
    key(w, Qt.Key.Key_Z, CTRL)  # undo brings it back, in the database too
    assert {p.node for p in w.prelabels.proposals.values()} == {"car", "pedestrian_adult"}
    assert db.proposal_decisions(image_id, v1) == []
    key(w, Qt.Key.Key_Z, CTRL | SHIFT)
    w.close()

    again = opened(FakeWorker(v1, [CAR, ADULT]))  # the workspace opened again: the same model's proposals
    assert again.session.image["id"] == image_id  # still unlabeled: a rejection is no edit
    assert {p.node for p in again.prelabels.proposals.values()} == {"pedestrian_adult"}
    newer = opened(FakeWorker(model_id(db, "v2"), [CAR, ADULT]))  # a newer model version may propose it again
    assert {p.node for p in newer.prelabels.proposals.values()} == {"car", "pedestrian_adult"}


# --- item 5: a refine answer shows the class it gets; number keys retag; undo texts say what happened
def test_a_grabcut_answer_shows_its_class_number_keys_retag_it_and_undo_names_it(opened, db):
    answer = RefineProposal((20.4, 200.2, 80.6, 290.7), None, 0.0, "grabcut")
    w = opened(FakeWorker(model_id(db, "v1"), [], refine_answer=answer))
    image_id = w.session.image["id"]
    first = w.session.labels[0]["name"]  # the current class
    click(w.canvas, (50, 250), ALT)
    item = w.canvas.box_item(REFINED_ID, proposal=True)
    assert item is not None and w.canvas.selected_proposal_ids() == [REFINED_ID]
    assert item.tag_text() == f"{first} (GrabCut)"  # was "refined (grabcut) 0.00": no class, a meaningless score
    key(w, Qt.Key.Key_3)  # Car
    assert item.tag_text() == "Car (GrabCut)" and w.canvas.selected_proposal_ids() == [REFINED_ID]
    key(w, Qt.Key.Key_Return)
    (row,) = db.annotations(image_id)
    assert (row["label"], row["provenance"]) == ("Car", "refined")
    assert w.session.undo_stack.undoText() == "accept refined box Car (GrabCut)"  # was "accept pre-label"
    key(w, Qt.Key.Key_Z, CTRL)
    assert w.statusBar().currentMessage() == "undo: accept refined box Car (GrabCut)"
    assert db.annotations(image_id) == [] and REFINED_ID in w.canvas.proposal_boxes()  # the answer is back


def test_a_number_key_retags_the_selected_proposal_before_enter(opened, db):
    w = opened(FakeWorker(model_id(db, "v1"), [CAR, ADULT]))
    image_id = w.session.image["id"]
    pid = select_proposal(w, "car")
    key(w, Qt.Key.Key_4)  # Truck
    assert w.canvas.box_item(pid, proposal=True).tag_text() == "Truck 0.80"
    assert db.annotations(image_id) == []  # nothing is written before the accept
    key(w, Qt.Key.Key_Return)
    (row,) = db.annotations(image_id)
    assert (row["label"], row["provenance"]) == ("Truck", "prelabel_accepted")
    assert w.session.undo_stack.undoText() == "accept pre-label Truck"


# --- item 7: whole pixels on every path ------------------------------------------------------------
def test_snap_box_rounds_each_edge_and_keeps_a_pixel():
    assert snap_box((190.903, 60.5, 240.49, 99.5)) == (191.0, 61.0, 240.0, 100.0)
    assert snap_box((10.2, 0.1, 10.4, 0.3)) == (9.0, 0.0, 10.0, 1.0)  # thinner than a pixel: one pixel
    assert snap_box((0.2, 5, 0.4, 9)) == (0.0, 5.0, 1.0, 9.0)  # at the border the far edge moves


def test_every_window_path_stores_whole_pixels(opened, db):
    w = opened(FakeWorker(model_id(db, "v1"), [CAR, ADULT]))
    image_id = w.session.image["id"]
    select_proposal(w, "car")
    key(w, Qt.Key.Key_Return)  # an accepted model box (was stored as 190.903…)
    pid = select_proposal(w, "pedestrian_adult")
    x1, y1, x2, y2 = w.canvas.proposal_boxes()[pid]
    drag(w.canvas, (x2, (y1 + y2) / 2), (x2 + 12, (y1 + y2) / 2))  # one edge resized (was: only that edge whole)
    drag(w.canvas, (400, 200), (460.6, 280.3))  # a drawn box
    key(w, Qt.Key.Key_Right)  # a nudge of it
    rows = db.annotations(image_id)
    assert sorted(r["provenance"] for r in rows) == ["manual", "prelabel_accepted", "prelabel_adjusted"]
    for r in rows:
        box = (r["x1"], r["y1"], r["x2"], r["y2"])
        assert all(v == int(v) for v in box), (r["provenance"], box)
    accepted = next(r for r in rows if r["provenance"] == "prelabel_accepted")
    assert (accepted["x1"], accepted["y1"], accepted["x2"], accepted["y2"]) == (100, 61, 191, 140)


# --- item 8: one proposal per object, readable tags ------------------------------------------------
def test_no_proposal_over_a_box_of_the_same_object_and_no_tag_hides_another(opened, db, folder):
    image_id = db.image_ids("B", "unlabeled")[0]
    car = next(lab["id"] for lab in db.labels("B") if lab["name"] == "Car")
    db.add_annotation(image_id, car, (100, 100, 180, 150))  # the annotator's box of the car
    db.set_status(image_id, "unlabeled")  # so that the window opens on it
    dets = [Detection("car", (100, 100, 200, 160), 0.9),  # the same car, IoU 0.67: was shown over the box
            Detection("car", (300, 200, 400, 260), 0.51), Detection("truck", (303, 203, 460, 310), 0.63)]
    w = opened(FakeWorker(model_id(db, "v1"), dets))
    assert w.session.image["id"] == image_id
    assert sorted((p.label, p.box) for p in w.prelabels.proposals.values()) == [
        ("Car", (300, 200, 400, 260)), ("Truck", (303, 203, 460, 310))]
    items = [*(w.canvas.box_item(i) for i in w.canvas.annotation_boxes()),
             *(w.canvas.box_item(i, proposal=True) for i in w.canvas.proposal_boxes())]

    def tags():  # every tag on screen, in viewport pixels
        out = []
        for it in items:
            corner = QPointF(w.canvas.to_view(it.box()[0], it.box()[1]))
            out.append((it.tag_text(), it.tag_rect().translated(corner)))
        return out

    for zoom in (None, 0.5, 3.0):
        if zoom:
            w.canvas.zoom_by(zoom)
        placed = tags()
        for k, (text_a, a) in enumerate(placed):
            for text_b, b in placed[k + 1:]:
                assert not a.intersects(b), (zoom, text_a, text_b)  # was "Car 0.51" printed over "Truck 0.63"


# --- item 9: a nudge never brings back an accepted proposal; Delete says what it did ----------------
def test_a_nudge_never_brings_back_the_accepted_proposal(opened, db):
    w = opened(FakeWorker(model_id(db, "v1"), [CAR, ADULT]))
    pid = select_proposal(w, "pedestrian_adult")
    key(w, Qt.Key.Key_Return)
    (aid,) = [a["id"] for a in w.session.annotations]
    click(w.canvas, center(w.canvas.annotation_boxes()[aid]))
    assert w.canvas.selected_ids() == [aid]
    for _ in range(3):
        key(w, Qt.Key.Key_Right, SHIFT)  # 30 px: the box no longer covers where the proposal was
    assert w.canvas.annotation_boxes()[aid][0] == pytest.approx(330, abs=0.5)
    assert pid not in w.canvas.proposal_boxes()  # the dashed original came back here
    assert {p.node for p in w.prelabels.proposals.values()} == {"car"}


def test_delete_says_what_it_did_and_undo_undoes_that(opened, db):
    answer = RefineProposal((398.2, 201.0, 458.7, 279.6), "car", 0.77, "cache")
    w = opened(FakeWorker(model_id(db, "v1"), [], refine_answer=answer))
    drag(w.canvas, (400, 200), (460, 280))
    (aid,) = w.canvas.selected_ids()
    name = w.session.annotations[0]["label"]  # R keeps the box's class
    key(w, Qt.Key.Key_Right)
    key(w, Qt.Key.Key_R)  # refine the selected box: the answer is shown, selected
    assert w.canvas.selected_proposal_ids() == [REFINED_ID]
    key(w, Qt.Key.Key_Delete)
    assert REFINED_ID not in w.canvas.proposal_boxes()
    assert w.statusBar().currentMessage().startswith(f"reject refined box {name} (model)")
    key(w, Qt.Key.Key_Z, CTRL)  # was "undo: nudge", and the nudge was undone instead
    assert w.statusBar().currentMessage() == f"undo: reject refined box {name} (model)"
    assert REFINED_ID in w.canvas.proposal_boxes() and w.canvas.annotation_boxes()[aid][0] == 401
    key(w, Qt.Key.Key_Escape)
    key(w, Qt.Key.Key_Delete)
    assert w.statusBar().currentMessage().startswith("nothing selected to delete")
    key(w, Qt.Key.Key_A, CTRL)  # the box, not the refine answer over it
    key(w, Qt.Key.Key_Delete)
    assert w.statusBar().currentMessage().startswith("deleted 1 box")
    assert w.session.undo_stack.undoText() == "delete 1 box"

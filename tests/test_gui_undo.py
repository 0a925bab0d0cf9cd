"""Undo commands without widgets: each redo()/undo() writes exactly one transaction, for every provenance."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QUndoStack

from labeler.app.undo import NUDGE_ID, AddAnnotation, AnnotationState, DeleteAnnotations, EditAnnotations, SetStatus
from projects.imaging import write_image
from projects.synthetic import make_scene
from projects.taxonomy import CustomerTaxonomy, Label
from projects.workspace import Workspace


@pytest.fixture
def setup(ws: Workspace, tmp_path, qapp):
    ws.add_project("P", CustomerTaxonomy([Label("Human", "person"), Label("Car", "car")]))
    write_image(tmp_path / "a.png", make_scene(0).image)
    (image_id,) = ws.add_images("P", [tmp_path / "a.png"]).added
    human, car = (lab["id"] for lab in ws.labels("P"))
    return ws, image_id, human, car


class TransactionCounter:
    """Counts BEGINs on the workspace connection (sqlite-utils' atomic() opens one per transaction)."""

    def __init__(self, ws: Workspace):
        self.begins = 0
        ws.db.conn.set_trace_callback(self._trace)

    def _trace(self, sql: str) -> None:
        if sql.strip().upper().startswith("BEGIN"):
            self.begins += 1

    def take(self) -> int:
        n, self.begins = self.begins, 0
        return n


def box(ws, aid):
    a = ws.annotation(aid)
    return (a["x1"], a["y1"], a["x2"], a["y2"])


def test_add_undo_redo_keeps_one_row_and_one_transaction_each(setup):
    ws, image_id, human, _ = setup
    stack, seen = QUndoStack(), []
    tx = TransactionCounter(ws)
    cmd = AddAnnotation(ws, image_id, human, (1, 2, 30, 40), on_applied=seen.append)
    stack.push(cmd)
    assert tx.take() == 1
    aid = cmd.annotation_id
    assert ws.annotation(aid)["provenance"] == "manual" and ws.annotation(aid)["deleted_at"] is None
    stack.undo()
    assert tx.take() == 1 and ws.annotation(aid)["deleted_at"] is not None
    stack.redo()
    assert tx.take() == 1 and ws.annotation(aid)["deleted_at"] is None
    assert [a["id"] for a in ws.annotations(image_id, include_deleted=True)] == [aid]  # same row, no copy
    assert seen == [image_id] * 3


def test_the_same_commands_serve_prelabels_and_refinement(setup):
    ws, image_id, human, car = setup
    model_id = ws.register_model("v1", "/nowhere.safetensors")
    stack = QUndoStack()
    accepted = AddAnnotation(ws, image_id, car, (5, 5, 50, 50), provenance="prelabel_accepted", model_id=model_id)
    stack.push(accepted)
    row = ws.annotation(accepted.annotation_id)
    assert (row["provenance"], row["model_id"]) == ("prelabel_accepted", model_id)
    before = AnnotationState.of(row)
    after = AnnotationState((6, 6, 48, 49), car, "refined")
    stack.push(EditAnnotations(ws, image_id, {row["id"]: (before, after)}, "refine"))
    assert ws.annotation(row["id"])["provenance"] == "refined" and box(ws, row["id"]) == (6, 6, 48, 49)
    stack.undo()
    assert ws.annotation(row["id"])["provenance"] == "prelabel_accepted" and box(ws, row["id"]) == (5, 5, 50, 50)


def test_edit_of_several_boxes_is_one_transaction_and_nudges_merge(setup):
    ws, image_id, human, car = setup
    stack = QUndoStack()
    a = AddAnnotation(ws, image_id, human, (0, 0, 10, 10))
    b = AddAnnotation(ws, image_id, human, (20, 20, 30, 30))
    stack.push(a)
    stack.push(b)
    tx = TransactionCounter(ws)
    ids = [a.annotation_id, b.annotation_id]

    def nudge(dx):
        changes = {}
        for aid in ids:
            s = AnnotationState.of(ws.annotation(aid))
            x1, y1, x2, y2 = s.box
            changes[aid] = (s, AnnotationState((x1 + dx, y1, x2 + dx, y2), s.label_id, s.provenance))
        stack.push(EditAnnotations(ws, image_id, changes, "nudge", merge_id=NUDGE_ID))

    nudge(1)
    nudge(1)
    nudge(10)
    assert tx.take() == 3  # each nudge was written at once, one transaction for both boxes
    assert box(ws, ids[0]) == (12, 0, 22, 10) and box(ws, ids[1]) == (32, 20, 42, 30)
    assert stack.count() == 3  # two adds + one merged nudge
    stack.undo()
    assert tx.take() == 1
    assert box(ws, ids[0]) == (0, 0, 10, 10) and box(ws, ids[1]) == (20, 20, 30, 30)


def test_delete_several_and_status(setup):
    ws, image_id, human, _ = setup
    stack = QUndoStack()
    adds = [AddAnnotation(ws, image_id, human, (i, i, i + 5, i + 5)) for i in range(3)]
    for c in adds:
        stack.push(c)
    tx = TransactionCounter(ws)
    stack.push(DeleteAnnotations(ws, image_id, [c.annotation_id for c in adds]))
    assert tx.take() == 1 and ws.annotations(image_id) == []
    stack.undo()
    assert tx.take() == 1 and len(ws.annotations(image_id)) == 3
    assert ws.image(image_id)["status"] == "in_progress"
    stack.push(SetStatus(ws, image_id, "submitted"))
    assert ws.image(image_id)["status"] == "submitted"
    stack.undo()
    assert ws.image(image_id)["status"] == "in_progress"

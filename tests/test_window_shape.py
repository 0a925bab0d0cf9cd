"""The window's wiring (issue 14, "the shape behind it") and the items it fixes, driven with real keys and mouse.

* one submit pipeline: ordered before_submit checks that may veto, whatever order the controllers are built in;
* a lint fix or dismissal is one undo step that writes the edit and the finding's state in one transaction;
* the linter's calibration runs in the prediction worker's thread, not the GUI's; a submit that comes first
  is held and goes through by itself;
* item 1: F always fits, also while the findings list has the focus (the lint keys are Shift+F and X);
* item 3: the selected finding's box is framed on the canvas (a missed object has no box of its own);
* item 6: an unreadable image is never submitted as labelled, and a drag on it says why nothing is drawn.

Every check of an edit reads the database through a second connection.
"""

from __future__ import annotations

import shutil
import threading

import pytest
from PySide6.QtCore import SIGNAL, Qt
from PySide6.QtTest import QTest
from test_gui_support import drag
from test_lint_gui import folder, open_window, prepare  # noqa: F401  (the fixture `folder` is used by name)

import labeler.app.findings as findings_module
from labeler.app.findings import FindingsController
from labeler.app.loader import ImageLoader
from labeler.app.main_window import MainWindow
from labeler.app.prelabels import PrelabelController
from labeler.app.session import LabelingSession
from labeler.app.window_runner import build_window
from projects.workspace import Workspace

SHIFT, CTRL = Qt.KeyboardModifier.ShiftModifier, Qt.KeyboardModifier.ControlModifier
CHECKS = ["accept selected pre-label", "image readable", "lint findings"]


@pytest.fixture
def db(folder):  # noqa: F811
    ws = Workspace.open(folder)
    yield ws
    ws.close()


def close(w: MainWindow) -> None:
    w.close()
    w.session.ws.close()


def review(qtbot, w: MainWindow, image_id: int):
    """Press Enter on the image: the linter stops the submit with its findings on review."""
    w.canvas.setFocus()
    QTest.keyClick(w.canvas, Qt.Key.Key_Return)
    assert w.session.image["id"] == image_id and w.findings.pending == image_id
    return w.findings


def fitted_scale(w: MainWindow) -> float:
    width, height = w.canvas.image_size()
    view = w.canvas.viewport().rect()
    return min(view.width() / width, view.height() / height) * 0.98


# --- the submit pipeline -------------------------------------------------------------------------
def test_submit_checks_run_in_their_declared_order_whatever_order_the_controllers_are_built_in(qtbot, folder):  # noqa: F811
    composed = build_window(LabelingSession(Workspace.open(folder), "B"))
    qtbot.addWidget(composed)
    assert composed.submit_pipeline.checks() == CHECKS
    assert composed.submit_pipeline.hooks() == ["score gold image"]
    assert isinstance(composed.findings, FindingsController) and isinstance(composed.prelabels, PrelabelController)
    reverse = MainWindow(LabelingSession(Workspace.open(folder), "B"), ImageLoader())
    qtbot.addWidget(reverse)
    reverse.findings = FindingsController(reverse)  # lint first this time, then the pre-labels
    reverse.prelabels = PrelabelController(reverse)
    assert reverse.submit_pipeline.checks() == CHECKS
    def receivers(w: MainWindow, name: str) -> int:
        return w.actions_by_name[name].receivers(SIGNAL("triggered(bool)"))

    for w in (composed, reverse):  # Enter and Delete keep the key table's one connection: nobody rewired them
        assert receivers(w, "submit_and_next") == receivers(w, "next_image")  # both also on the toolbar
        assert receivers(w, "delete_boxes") == receivers(w, "select_next_box") == 1
    with pytest.raises(ValueError, match="registered twice"):
        reverse.submit_pipeline.before_submit("lint findings", 5, lambda image: None)
    for w in (composed, reverse):
        close(w)


# --- lint answers are undo commands, one transaction each ----------------------------------------------
def test_a_lint_fix_and_a_dismissal_are_undo_steps_that_restore_edit_and_finding_together(qtbot, folder, db):  # noqa: F811
    image_id, (missed,) = prepare(folder)
    w = open_window(qtbot, folder, image_id)
    c = review(qtbot, w, image_id)
    (finding,) = c.panel.rows()
    before = {a["id"] for a in db.annotations(image_id)}
    QTest.keyClick(c.panel.list, Qt.Key.Key_F, SHIFT)  # fix: the missed box is added
    (added,) = {a["id"] for a in db.annotations(image_id)} - before
    assert [f["state"] for f in db.lint_findings(image_id)] == ["fixed"]
    assert w.session.undo_stack.undoText().startswith("fix lint finding: add the missed")
    QTest.keyClick(w.canvas, Qt.Key.Key_Z, CTRL)  # one undo takes back both
    assert {a["id"] for a in db.annotations(image_id)} == before
    assert [f["state"] for f in db.lint_findings(image_id)] == ["open"]
    assert [r.state for r in c.panel.rows()] == ["open"]  # the dock shows it open again
    QTest.keyClick(w.canvas, Qt.Key.Key_Y, CTRL)  # and redo brings both back, the same annotation row
    assert {a["id"] for a in db.annotations(image_id)} == before | {added}
    assert [f["state"] for f in db.lint_findings(image_id)] == ["fixed"]
    QTest.keyClick(w.canvas, Qt.Key.Key_Z, CTRL)
    c.panel.select_first_open()
    QTest.keyClick(w.canvas, Qt.Key.Key_X)  # dismiss, from the canvas: X is a window key
    assert [f["state"] for f in db.lint_findings(image_id)] == ["dismissed"]
    assert w.session.undo_stack.undoText() == "dismiss lint finding: Missed object"
    QTest.keyClick(w.canvas, Qt.Key.Key_Z, CTRL)
    assert [f["state"] for f in db.lint_findings(image_id)] == ["open"] and finding.id == c.panel.rows()[0].id
    close(w)


def test_a_fix_whose_finding_state_cannot_be_written_adds_no_box(qtbot, folder, db, monkeypatch):  # noqa: F811
    """Edit and finding state are one transaction: a failure in the second leaves no half-applied fix."""
    image_id, _ = prepare(folder)
    w = open_window(qtbot, folder, image_id)
    c = review(qtbot, w, image_id)
    before = {a["id"] for a in db.annotations(image_id)}

    def locked(finding_id: int, state: str) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(w.session.ws, "set_finding_state", locked)
    QTest.keyClick(c.panel.list, Qt.Key.Key_F, SHIFT)
    assert {a["id"] for a in db.annotations(image_id)} == before  # the added box was rolled back with it
    assert [f["state"] for f in db.lint_findings(image_id)] == ["open"]
    assert "could not save" in w.last_error and "Nothing was changed" in w.last_error
    assert not w.session.undo_stack.canUndo()
    close(w)


# --- calibration through the worker ---------------------------------------------------------------
def test_calibration_runs_in_the_prediction_workers_thread(qtbot, folder, monkeypatch):  # noqa: F811
    import inference.lint

    threads = []
    real = inference.lint.project_calibration

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(inference.lint, "project_calibration", spy)
    image_id, _ = prepare(folder)
    w = open_window(qtbot, folder, image_id, composed=True)  # waits until the calibration arrived
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert {t.name for t in threads} == {"labeler-inference"}  # the pre-label worker's thread
    review(qtbot, w, image_id)  # the submit itself calibrates nothing more
    assert len(threads) == 1
    close(w)


def test_a_submit_before_the_calibration_is_held_and_then_goes_through(qtbot, folder, db, monkeypatch):  # noqa: F811
    release = threading.Event()
    real = findings_module._calibrate

    def slow(*args):
        assert release.wait(30)
        return real(*args)

    monkeypatch.setattr(findings_module, "_calibrate", slow)
    image_id, (missed,) = prepare(folder)
    w = MainWindow(LabelingSession(Workspace.open(folder), "B"), ImageLoader())
    qtbot.addWidget(w)
    c = findings_module.install(w)
    w.show()
    assert w.session.go_to_image(image_id)
    qtbot.waitUntil(lambda: w.ready_image_id == image_id, timeout=10000)
    assert not c.calibrated()
    w.canvas.setFocus()
    QTest.keyClick(w.canvas, Qt.Key.Key_Return)  # the GUI does not wait for the calibration
    assert "calibrating" in w.statusBar().currentMessage()
    assert db.image(image_id)["status"] == "in_progress" and c.panel.rows() == []
    release.set()
    qtbot.waitUntil(lambda: c.panel.rows() != [], timeout=30000)  # the held submit ran the linter by itself
    assert [r.kind for r in c.panel.rows()] == ["missed"] and c.pending == image_id
    assert db.image(image_id)["status"] == "in_progress"  # ...which stopped it for the review, as usual
    close(w)


# --- item 1: F always fits ---------------------------------------------------------------------
def test_f_fits_also_while_the_findings_list_has_the_focus(qtbot, folder, db):  # noqa: F811
    image_id, _ = prepare(folder)
    w = open_window(qtbot, folder, image_id)
    c = review(qtbot, w, image_id)
    assert c.panel.list.hasFocus() and w.canvas.scale_factor() > fitted_scale(w) * 1.2  # zoomed to the finding
    n_boxes = len(db.annotations(image_id))
    QTest.keyClick(c.panel.list, Qt.Key.Key_F)
    assert w.canvas.scale_factor() == pytest.approx(fitted_scale(w))  # fitted...
    assert len(db.annotations(image_id)) == n_boxes and c.panel.open_count() == 1  # ...and nothing fixed
    c.zoom_to(c.panel.rows()[0].id, c.panel.rows()[0].box)
    QTest.keyClick(c.panel.list, Qt.Key.Key_F)  # again: F does not wait for a click on the canvas
    assert w.canvas.scale_factor() == pytest.approx(fitted_scale(w))
    QTest.keyClick(c.panel.list, Qt.Key.Key_F, SHIFT)  # the fix has its own key
    assert len(db.annotations(image_id)) == n_boxes + 1 and w.canvas.hasFocus()  # last answer: back to the canvas
    w.canvas.zoom_by(3.0)
    QTest.keyClick(w.canvas, Qt.Key.Key_F)
    assert w.canvas.scale_factor() == pytest.approx(fitted_scale(w))
    close(w)


def test_arrow_keys_in_the_findings_list_never_nudge_the_selected_box(qtbot, folder, db):  # noqa: F811
    image_id, _ = prepare(folder)
    w = open_window(qtbot, folder, image_id)
    c = review(qtbot, w, image_id)
    box_id = w.session.annotations[0]["id"]
    w.canvas.select([box_id])
    stored = db.annotation(box_id)
    for key in (Qt.Key.Key_Down, Qt.Key.Key_Up, Qt.Key.Key_Left, Qt.Key.Key_Right):
        QTest.keyClick(c.panel.list, key)
    assert db.annotation(box_id)["x1"] == stored["x1"] and db.annotation(box_id)["y1"] == stored["y1"]
    QTest.keyClick(c.panel.list, Qt.Key.Key_Escape)
    assert w.canvas.hasFocus()
    close(w)


# --- item 3: the finding's box on the canvas ---------------------------------------------------------
def test_a_missed_object_finding_is_framed_on_the_canvas(qtbot, folder, db):  # noqa: F811
    image_id, (missed,) = prepare(folder)
    w = open_window(qtbot, folder, image_id)
    assert w.canvas.marker() is None
    c = review(qtbot, w, image_id)
    marker = w.canvas.marker()
    assert marker is not None and marker.box() == pytest.approx(tuple(missed["box"]))
    assert marker.scene() is w.canvas.scene() and "Missed object" in marker.text
    assert not any(a["x1"] == missed["box"][0] for a in db.annotations(image_id))  # no box of its own there
    # it is painted: around the frame the pixels differ from the same view without it
    c.zoom_to(c.panel.rows()[0].id, missed["box"])
    with_frame = w.canvas.viewport().grab().toImage()
    w.canvas.set_marker(None)
    without = w.canvas.viewport().grab().toImage()
    left = w.canvas.to_view(missed["box"][0], (missed["box"][1] + missed["box"][3]) / 2)
    ring = [(left.x() - 4 + dx, left.y() + dy) for dx in (-1, 0, 1) for dy in range(-6, 7)]
    assert any(with_frame.pixel(x, y) != without.pixel(x, y) for x, y in ring)
    c.refresh()  # the frame follows the selected finding again
    assert w.canvas.marker() is not None
    w.session.next()
    assert w.canvas.marker() is None  # another image: no frame left behind
    close(w)


# --- item 6: an unreadable image ------------------------------------------------------------------
def test_an_unreadable_image_is_not_submitted_and_a_drag_on_it_says_why(qtbot, folder, db):  # noqa: F811
    ids = db.image_ids("B", "unlabeled")
    bad, good = db.image(ids[0]), db.image(ids[1])
    path = db.image_path(bad["path"])
    shutil.copy(path, path.with_suffix(".orig"))
    path.write_bytes(b"\xff\xd8 this is not a jpeg")
    w = MainWindow(LabelingSession(Workspace.open(folder), "B"), ImageLoader())
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    assert w.session.go_to_image(bad["id"])
    qtbot.waitUntil(lambda: w.ready_image_id == bad["id"], timeout=10000)
    assert not w.canvas.has_image()
    drag(w.canvas, (20, 30), (90, 120))
    assert db.annotations(bad["id"]) == []
    said = w.statusBar().currentMessage()
    assert "cannot draw on" in said and path.name in said and "not a readable image" in said
    w.canvas.setFocus()
    QTest.keyClick(w.canvas, Qt.Key.Key_Return)
    assert db.image(bad["id"])["status"] == "unlabeled" and w.session.image["id"] == bad["id"]  # not submitted
    said = w.statusBar().currentMessage()
    assert f"{path.name} is not submitted" in said and "not a readable image" in said
    assert w.submit_pipeline.last_veto[0] == "image readable"
    shutil.copy(path.with_suffix(".orig"), path)  # the file is replaced: read again when shown, then submittable
    w.session.go_to_image(good["id"])
    w.session.go_to_image(bad["id"])
    qtbot.waitUntil(lambda: w.canvas.has_image(), timeout=10000)
    QTest.keyClick(w.canvas, Qt.Key.Key_Return)
    assert db.image(bad["id"])["status"] == "submitted"
    close(w)

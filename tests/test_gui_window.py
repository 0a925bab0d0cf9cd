"""The labeling window on a copy of the demo workspace, driven with real mouse and key events.

Every check of an edit reads the database through a second connection: what the window shows must
be what is committed, at once, with nothing left to save.
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from test_gui_support import click, copy_workspace, drag

from labeler.app import keymap
from labeler.app.loader import ImageLoader
from labeler.app.main_window import MainWindow
from labeler.app.session import LabelingSession
from projects.workspace import Workspace, WorkspaceError

CTRL, SHIFT = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def ws_copy(demo_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELER_SETTINGS", str(tmp_path / "settings.ini"))
    return copy_workspace(demo_ws, tmp_path / "ws")


def open_window(qtbot, folder, project="B", loader=None) -> MainWindow:
    session = LabelingSession(Workspace.open(folder), project)
    w = MainWindow(session, loader or ImageLoader())
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    wait_shown(qtbot, w)
    return w


def wait_shown(qtbot, w: MainWindow) -> None:
    qtbot.waitUntil(lambda: w.ready_image_id == w.session.image["id"], timeout=10000)


@pytest.fixture
def window(qtbot, ws_copy):
    w = open_window(qtbot, ws_copy)
    yield w
    w.close()
    w.session.ws.close()


@pytest.fixture
def db(ws_copy):
    """A second, independent connection: sees only what is committed."""
    ws = Workspace.open(ws_copy)
    yield ws
    ws.close()


def key(w: MainWindow, k, mod=Qt.KeyboardModifier.NoModifier) -> None:
    QTest.keyClick(w.canvas, k, mod)


def live(db: Workspace, image_id: int) -> dict[int, dict]:
    return {a["id"]: a for a in db.annotations(image_id)}


def draw_new(w: MainWindow, db: Workspace, start, end) -> dict:
    image_id = w.session.image["id"]
    before = set(live(db, image_id))
    drag(w.canvas, start, end)
    (new,) = set(live(db, image_id)) - before
    return live(db, image_id)[new]


def test_drawing_a_box_writes_a_manual_annotation_at_once(window, db):
    image_id = window.session.image["id"]
    row = draw_new(window, db, (20, 30), (90, 120))
    assert (row["x1"], row["y1"], row["x2"], row["y2"]) == (20, 30, 90, 120)
    assert row["provenance"] == "manual" and row["label"] == "Pedestrian_adult"  # the current class
    assert row["id"] in window.canvas.annotation_boxes()
    assert row["id"] in window.annotation_list.ids()
    assert window.canvas.selected_ids() == [row["id"]] == window.annotation_list.selected_ids()  # ready for 1-9
    assert db.image(image_id)["status"] in ("in_progress", "submitted")


def test_move_resize_and_class_change_update_the_row(window, db):
    row = draw_new(window, db, (20, 30), (90, 120))
    aid = row["id"]
    click(window.canvas, (50, 60))
    assert window.canvas.selected_ids() == [aid] and window.annotation_list.selected_ids() == [aid]
    drag(window.canvas, (50, 60), (60, 70))  # move by (10, 10)
    assert tuple(db.annotation(aid)[k] for k in ("x1", "y1", "x2", "y2")) == (30, 40, 100, 130)
    drag(window.canvas, (100, 130), (140, 150))  # bottom-right handle
    assert tuple(db.annotation(aid)[k] for k in ("x1", "y1", "x2", "y2")) == (30, 40, 140, 150)
    key(window, Qt.Key.Key_3)  # B's key 3 is Car
    car = window.session.label_for_shortcut("3")["id"]
    assert db.annotation(aid)["label_id"] == car
    assert window.canvas.box_item(aid).label == "Car"
    assert window.session.current_label_id == car  # and the next box is drawn as Car too
    assert draw_new(window, db, (200, 200), (260, 240))["label_id"] == car


def test_class_picker_finds_a_label_by_name(window, db, qtbot):
    aid = draw_new(window, db, (20, 30), (90, 120))["id"]
    click(window.canvas, (50, 60))
    key(window, Qt.Key.Key_C)
    picker = window._dialogs[-1]
    qtbot.waitUntil(lambda: QApplication.activeWindow() is picker)
    QTest.keyClicks(picker.search, "bu")
    assert picker.visible_names() == ["Bus"]
    QTest.keyClick(picker.search, Qt.Key.Key_Return)
    assert db.annotation(aid)["label_id"] == window.session.label_for_shortcut("5")["id"]


def test_undo_and_redo_restore_canvas_and_database(window, db):
    aid = draw_new(window, db, (20, 30), (90, 120))["id"]
    click(window.canvas, (50, 60))
    key(window, Qt.Key.Key_Right)
    key(window, Qt.Key.Key_Right)
    key(window, Qt.Key.Key_Down, SHIFT)
    box = lambda: tuple(db.annotation(aid)[k] for k in ("x1", "y1", "x2", "y2"))
    assert box() == (22, 40, 92, 130)
    key(window, Qt.Key.Key_Z, CTRL)  # the three nudges are one undo step
    assert box() == (20, 30, 90, 120)
    assert window.canvas.annotation_boxes()[aid] == (20, 30, 90, 120)
    key(window, Qt.Key.Key_Z, CTRL)  # undo the drawing: the row is soft-deleted, the box is gone
    assert aid not in live(db, window.session.image["id"]) and db.annotation(aid)["deleted_at"]
    assert aid not in window.canvas.annotation_boxes()
    key(window, Qt.Key.Key_Z, CTRL | SHIFT)
    assert aid in live(db, window.session.image["id"]) and aid in window.canvas.annotation_boxes()
    key(window, Qt.Key.Key_Y, CTRL)
    assert box() == (22, 40, 92, 130) and window.canvas.annotation_boxes()[aid] == (22, 40, 92, 130)


def test_delete_key_and_undo(window, db):
    image_id = window.session.image["id"]
    before = set(live(db, image_id))
    assert before, "demo image 1 of B has boxes"
    key(window, Qt.Key.Key_A, CTRL)
    key(window, Qt.Key.Key_Delete)
    assert live(db, image_id) == {} and window.canvas.annotation_boxes() == {}
    key(window, Qt.Key.Key_Z, CTRL)
    assert set(live(db, image_id)) == before == set(window.canvas.annotation_boxes())


def test_undo_reaches_back_to_an_earlier_image(window, db, qtbot):
    first = window.session.image["id"]
    aid = draw_new(window, db, (20, 30), (90, 120))["id"]
    key(window, Qt.Key.Key_D)
    assert window.session.image["id"] != first
    key(window, Qt.Key.Key_Z, CTRL)
    assert window.session.image["id"] == first  # the window shows what the undo changed
    assert aid not in live(db, first) and aid not in window.canvas.annotation_boxes()


def test_submit_advances_to_the_next_open_image(window, db):
    s = window.session
    start = s.image["id"]
    open_ids = [i for i in s.queue if db.image(i)["status"] != "submitted"]
    submitted_before = s.counts["submitted"]
    key(window, Qt.Key.Key_Return)
    assert db.image(start)["status"] == "submitted"
    expected = next((i for i in open_ids if i > start), None) or next(i for i in open_ids if i != start)
    assert s.image["id"] == expected
    assert s.counts["submitted"] == submitted_before + (start in open_ids)
    row = s.row_of(start)
    assert window.image_list.model.row(row).status == "submitted"
    assert f"{s.counts['submitted']} / {len(s.queue)} submitted" in window.status_counts.text()


def test_navigation_keys_and_next_unlabeled(window, db):
    s = window.session
    key(window, Qt.Key.Key_D)
    assert s.index == 1
    key(window, Qt.Key.Key_A)
    assert s.index == 0
    key(window, Qt.Key.Key_End)
    assert s.index == len(s.queue) - 1
    key(window, Qt.Key.Key_N)
    assert db.image(s.image["id"])["status"] == "unlabeled"


def test_status_filter_lists_only_those_images(window, db, qtbot):
    panel = window.image_list
    panel.filter.setCurrentIndex(panel.filter.findData("unlabeled"))
    s = window.session
    assert s.queue == db.image_ids("B", "unlabeled")
    assert panel.model.rowCount() == len(s.queue)
    assert all(panel.model.row(r).status == "unlabeled" for r in range(panel.model.rowCount()))
    assert "of the unlabeled ones" in window.status_position.text()


def test_corrupt_and_missing_images_show_a_placeholder_and_the_app_keeps_working(ws_copy, db, qtbot):
    ids = db.image_ids("B")
    bad, missing = db.image(ids[1]), db.image(ids[2])
    db.image_path(bad["path"]).write_bytes(b"\xff\xd8 this is not a jpeg")
    db.image_path(missing["path"]).unlink()
    w = open_window(qtbot, ws_copy)
    try:
        key(w, Qt.Key.Key_D)
        wait_shown(qtbot, w)
        assert not w.canvas.has_image() and "not a readable image" in w.canvas.picture().message
        assert w.canvas.annotation_boxes().keys() == live(db, bad["id"]).keys()  # its boxes are still shown
        key(w, Qt.Key.Key_D)
        wait_shown(qtbot, w)
        assert "file not found" in w.canvas.picture().message
        key(w, Qt.Key.Key_D)
        wait_shown(qtbot, w)
        assert w.canvas.has_image()  # and the next good one shows
        row = draw_new(w, db, (10, 10), (50, 50))
        assert row["provenance"] == "manual"
    finally:
        w.close()
        w.session.ws.close()


def test_closing_without_saving_loses_nothing(ws_copy, qtbot):
    w = open_window(qtbot, ws_copy)
    image_id = w.session.image["id"]
    drag(w.canvas, (20, 30), (90, 120))
    drag(w.canvas, (200, 40), (260, 90))
    key(w, Qt.Key.Key_Return)
    w.close()
    w.session.ws.close()
    with Workspace.open(ws_copy) as ws:
        boxes = {(a["x1"], a["y1"], a["x2"], a["y2"]) for a in ws.annotations(image_id)}
        assert {(20, 30, 90, 120), (200, 40, 260, 90)} <= boxes
        assert ws.image(image_id)["status"] == "submitted"


def test_label_a_whole_project_from_keyboard_and_mouse(ws_copy, db, qtbot):
    """Project A: draw a Human box on every open image, press 1 and Enter, until nothing is left."""
    w = open_window(qtbot, ws_copy, project="A")
    try:
        key(w, Qt.Key.Key_N)
        for _ in range(len(w.session.queue) + 1):
            if w.session.counts["submitted"] == len(w.session.queue):
                break
            wait_shown(qtbot, w)
            drag(w.canvas, (30, 40), (80, 160))
            key(w, Qt.Key.Key_1)
            key(w, Qt.Key.Key_Return)
        assert db.status_counts("A") == {"unlabeled": 0, "in_progress": 0, "submitted": len(w.session.queue)}
        manual = db.db.execute("SELECT COUNT(*) FROM annotations a JOIN images i ON i.id=a.image_id JOIN projects p "
                               "ON p.id=i.project_id WHERE p.name='A' AND a.provenance='manual' "
                               "AND a.deleted_at IS NULL").fetchone()[0]
        assert manual > 0
    finally:
        w.close()
        w.session.ws.close()


def test_project_switch_and_shortcut_sheet(window, qtbot):
    window.project_box.setCurrentIndex(window.project_box.findText("C"))
    window.project_box.activated.emit(window.project_box.findText("C"))
    assert window.session.project == "C"
    assert [lab.name for lab in window.labels_panel.labels()] == ["Vehicle"]
    key(window, Qt.Key.Key_F1)
    sheet = window._dialogs[-1]
    text = sheet.rows_text()
    for b in keymap.BINDINGS:
        assert any((b.family or b.description) == d for _, d in text), b.name
    assert ("Ctrl+Z", "Undo (unlimited within the session)") in text


def test_tab_cycles_the_selection_and_keypad_digits_pick_classes(window, db):
    boxes = window.canvas.annotation_boxes()
    assert len(boxes) >= 2
    key(window, Qt.Key.Key_Tab)
    first = window.canvas.selected_ids()
    key(window, Qt.Key.Key_Tab)
    second = window.canvas.selected_ids()
    assert len(first) == len(second) == 1 and first != second
    assert window.annotation_list.selected_ids() == second
    key(window, Qt.Key.Key_Tab, SHIFT)
    assert window.canvas.selected_ids() == first
    key(window, Qt.Key.Key_4, Qt.KeyboardModifier.KeypadModifier)  # Truck, from the number pad
    assert db.annotation(first[0])["label_id"] == window.session.label_for_shortcut("4")["id"]
    key(window, Qt.Key.Key_Escape)
    assert window.canvas.selected_ids() == [] == window.annotation_list.selected_ids()


def test_a_failed_write_is_reported_and_nothing_is_shown_that_is_not_stored(window, db, monkeypatch):
    image_id = window.session.image["id"]
    before = set(live(db, image_id))
    count = window.session.undo_stack.count()

    def locked(*args, **kwargs):
        raise WorkspaceError("database is locked")

    monkeypatch.setattr(window.session.ws, "add_annotation", locked)
    drag(window.canvas, (20, 30), (90, 120))
    assert set(live(db, image_id)) == before == set(window.canvas.annotation_boxes())
    assert window.session.undo_stack.count() == count  # the failed edit is not on the stack
    assert "could not save" in window.last_error and "database is locked" in window.last_error
    monkeypatch.undo()
    assert draw_new(window, db, (20, 30), (90, 120))["provenance"] == "manual"  # and the next edit works

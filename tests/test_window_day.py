"""The labeling window for a working day (issue 14): zoom per image, status after undo, columns and
panels that keep their width, the F1 sheet from the one key table, and what users of other tools expect.

Driven with real key and mouse events on a copy of the demo workspace; states are read back from the
workspace through a second connection.
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtTest import QTest
from test_gui_support import copy_workspace, drag

from labeler.app import keymap, settings
from labeler.app.session import LabelingSession
from labeler.app.window_runner import build_window
from projects.schema import PROVENANCES
from projects.workspace import Workspace
from widgets import annotation_list, findings_panel

CTRL, SHIFT = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def ws_copy(demo_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELER_SETTINGS", str(tmp_path / "settings.ini"))
    return copy_workspace(demo_ws, tmp_path / "ws")


@pytest.fixture
def db(ws_copy):
    ws = Workspace.open(ws_copy)
    yield ws
    ws.close()


def open_window(qtbot, folder, project="B", lint=False, size=(1200, 800), resume=True):
    w = build_window(LabelingSession(Workspace.open(folder), project, resume=resume), prelabels=False, lint=lint)
    qtbot.addWidget(w)
    w.resize(*size)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    QTest.qWaitForWindowActive(w)
    wait_shown(qtbot, w)
    return w


def wait_shown(qtbot, w) -> None:
    qtbot.waitUntil(lambda: w.ready_image_id == w.session.image["id"], timeout=10000)


@pytest.fixture
def window(qtbot, ws_copy):
    w = open_window(qtbot, ws_copy)
    yield w
    w.close()
    w.session.ws.close()


def key(w, k, mod=Qt.KeyboardModifier.NoModifier) -> None:
    QTest.keyClick(w.canvas, k, mod)


# --- item 2: a new image opens fitted ------------------------------------------------------------------
def fitted_scale(w) -> float:
    """The scale F gives for the image on screen (F, read, then put back as it was)."""
    before = w.canvas.transform()
    w.canvas.fit()
    scale = w.canvas.scale_factor()
    w.canvas.setTransform(before)
    return scale


def test_a_new_image_opens_fitted_whatever_the_zoom_before(window, qtbot):
    c = window.canvas
    c.zoom_by(3.43 / c.scale_factor())  # the close-up a lint finding or the wheel leaves behind
    assert c.scale_factor() == pytest.approx(3.43)
    key(window, Qt.Key.Key_D)
    wait_shown(qtbot, window)
    assert c.scale_factor() == pytest.approx(fitted_scale(window))
    c.zoom_by(2.0)
    window.session.submit_and_next()  # the submit path opens the next image the same way
    wait_shown(qtbot, window)
    assert c.scale_factor() == pytest.approx(fitted_scale(window))


def test_the_zoom_can_be_kept_across_images_and_the_choice_is_remembered(window, qtbot, ws_copy):
    key(window, Qt.Key.Key_F, CTRL | SHIFT)
    assert window.new_image_zoom == "keep" and settings.new_image_zoom() == "keep"
    c = window.canvas
    c.zoom_by(2.5 / c.scale_factor())
    key(window, Qt.Key.Key_D)
    wait_shown(qtbot, window)
    assert c.scale_factor() == pytest.approx(2.5)
    again = open_window(qtbot, ws_copy)
    try:
        assert again.new_image_zoom == "keep"
    finally:
        again.close()
        again.session.ws.close()


# --- item 9: status after undo, columns, panel widths, the F1 sheet ------------------------------------
def test_undoing_the_only_box_makes_the_image_unlabeled_again(window, db):
    s = window.session
    image_id = s.image["id"]
    assert db.image(image_id)["status"] == "unlabeled" and db.annotations(image_id) == []
    unlabeled = s.counts["unlabeled"]
    drag(window.canvas, (20, 30), (90, 120))
    assert db.image(image_id)["status"] == "in_progress"
    key(window, Qt.Key.Key_Z, CTRL)
    assert db.annotations(image_id) == []
    assert db.image(image_id)["status"] == "unlabeled"
    assert window.image_list.model.row(s.index).status == "unlabeled" and s.counts["unlabeled"] == unlabeled
    key(window, Qt.Key.Key_Z, CTRL | SHIFT)
    assert len(db.annotations(image_id)) == 1 and db.image(image_id)["status"] == "in_progress"
    assert window.image_list.model.row(s.index).status == "in_progress"


def test_the_provenance_column_shows_every_provenance_in_full(qtbot, ws_copy):
    assert annotation_list.PROVENANCE_WORDS == PROVENANCES
    with Workspace.open(ws_copy) as ws:
        image_id = next(i for i in ws.image_ids("B") if ws.image(i)["status"] != "submitted")
        label = ws.labels("B")[0]["id"]
        ws.add_annotation(image_id, label, (10, 10, 60, 60), provenance="prelabel_adjusted", model_id=None)
        child = next(lab["id"] for lab in ws.labels("B") if lab["name"] == "Pedestrian_child")
        ws.add_annotation(image_id, child, (70, 10, 90, 60))
    w = open_window(qtbot, ws_copy, lint=True, size=(1440, 880))  # the default size, with the lint docks
    try:
        al = w.annotation_list
        item = al.topLevelItem(0)
        assert item.text(2) == "prelabel_adjusted"
        cell = al.visualItemRect(item)
        left = al.header().sectionViewportPosition(2)
        need = al.fontMetrics().horizontalAdvance("prelabel_adjusted")
        assert cell.height() > 0 and left + need <= al.viewport().width()
        assert al.header().sectionSize(2) >= need
        assert al.sizeHintForColumn(0) <= al.header().sectionSize(0)  # "Pedestrian_child" with its swatch, uncut
    finally:
        w.close()
        w.session.ws.close()


def test_panels_keep_their_width_when_findings_appear(qtbot, ws_copy):
    w = open_window(qtbot, ws_copy, lint=True, size=(1440, 880))
    try:
        def widths():
            QTest.qWait(50)
            return (w.images_group.width(), w.canvas.width(), w.boxes_group.width(), w.findings.dock.width())

        before = widths()
        image_id = w.session.image["id"]
        finding = {"kind": "missed", "score": 0.93, "box": (10, 10, 80, 90), "suggested_label": "Car",
                   "message": "the model sees a Car here (0.93) that no box covers"}
        for n in (1, 12, 40):
            w.session.ws.replace_lint_findings(image_id, None, [finding] * n, 0.9)
            w.findings.refresh()
            w.findings.dock.show()
            w.findings.dock.raise_()
            assert w.findings.panel.open_count() == n and f"{n} open finding" in w.findings.panel.summary.text()
            assert widths() == before
    finally:
        w.close()
        w.session.ws.close()


def sheet_of(w):
    key(w, Qt.Key.Key_F1)
    sheet = w._dialogs[-1]
    rows = sheet.rows_text()
    sheet.close()
    return rows


def test_the_f1_sheet_is_the_key_table_complete_each_group_once(window):
    rows = sheet_of(window)
    headers = [k for k, d in rows if d == ""]
    assert len(headers) == len(set(headers))  # "Mouse" (or any group) is listed once
    assert headers[:4] == ["Images", "Boxes", "Pre-labels", "Lint findings"] and headers[-1] == "Mouse"
    for action in window.actions():
        for seq in action.shortcuts():
            text = seq.toString(seq.SequenceFormat.NativeText)
            if text.startswith("Num+"):
                continue  # the keypad digits share the class row ("also on the keypad")
            assert any(text in k.split(" / ") or text in k.split(" ") for k, d in rows), (action.objectName(), text)
    by_keys = {k: d for k, d in rows}
    enter = next(d for k, d in by_keys.items() if k.startswith("Return"))
    delete = next(d for k, d in by_keys.items() if k.startswith("Del") and "findings" not in k)
    assert "Accept the selected pre-label" in enter and "submit" in enter
    assert "reject the selected pre-labels" in delete
    for k in findings_panel.DISMISS_KEYS:  # the findings list's own keys are on the sheet too
        name = QKeySequence(k).toString(QKeySequence.SequenceFormat.NativeText)
        assert any(name in keys and "findings list" in keys for keys in by_keys), name
    assert any(keys == "Shift+F" for keys in by_keys) and any(keys == "X" for keys in by_keys)


def test_sheet_rows_group_rows_registered_late_under_their_group():
    rows = keymap.sheet_rows()
    groups = [r.group for r in rows]
    assert groups == sorted(groups, key=lambda g: groups.index(g))  # each group's rows are contiguous


# --- what users of labelImg / labelme / X-AnyLabeling expect ----------------------------------------------
def test_w_draws_a_box_even_where_the_drag_starts_on_a_selected_box(window, db):
    image_id = window.session.image["id"]
    drag(window.canvas, (20, 30), (120, 140))
    (first,) = db.annotations(image_id)
    assert window.canvas.selected_ids() == [first["id"]]  # a plain drag inside it would move it
    key(window, Qt.Key.Key_W)
    assert window.canvas.draw_armed() and "drag a box anywhere" in window.statusBar().currentMessage()
    drag(window.canvas, (50, 60), (160, 170))
    rows = {a["id"]: (a["x1"], a["y1"], a["x2"], a["y2"]) for a in db.annotations(image_id)}
    assert rows[first["id"]] == (20, 30, 120, 140)  # not moved
    assert (50, 60, 160, 170) in rows.values() and len(rows) == 2
    assert not window.canvas.draw_armed()  # one box per W
    key(window, Qt.Key.Key_W)
    key(window, Qt.Key.Key_Escape)
    assert not window.canvas.draw_armed()


def test_ctrl_s_says_everything_is_already_saved(window):
    drag(window.canvas, (20, 30), (90, 120))
    key(window, Qt.Key.Key_S, CTRL)
    text = window.statusBar().currentMessage()
    assert text.startswith("Everything is saved") and "(1 edit this session" in text


def test_ctrl_h_hides_and_shows_boxes_and_proposals(window, db):
    image_id = window.session.image["id"]
    drag(window.canvas, (20, 30), (120, 140))
    window.canvas.set_proposals([(7, "Car", "#00ff00", (200.0, 40.0, 260.0, 90.0), 0.8)])
    c = window.canvas
    key(window, Qt.Key.Key_H, CTRL)
    assert not c.boxes_shown() and c.selected_ids() == []
    assert not any(c.box_item(i).isVisible() for i in c.annotation_boxes())
    assert not c.box_item(7, proposal=True).isVisible()
    drag(c, (40, 50), (100, 110))  # where a hidden box is: a new box, nothing moved or selected
    assert len(db.annotations(image_id)) == 2 and c.selected_proposal_ids() == []
    key(window, Qt.Key.Key_H, CTRL)
    assert c.boxes_shown() and all(c.box_item(i).isVisible() for i in c.annotation_boxes())
    assert c.box_item(7, proposal=True).isVisible()


def test_the_labels_list_counts_the_boxes_of_each_label(window):
    s, panel = window.session, window.labels_panel
    current = s.current_label_id
    drag(window.canvas, (20, 30), (90, 120))
    drag(window.canvas, (150, 30), (220, 120))
    key(window, Qt.Key.Key_3)  # the second box, selected, becomes class 3
    car = s.label_for_shortcut("3")["id"]
    assert panel.count_of(current) == 1 and panel.count_of(car) == 1
    row = next(panel.item(i) for i in range(panel.count()) if panel.item(i).data(Qt.ItemDataRole.UserRole) == car)
    assert row.text().endswith("(1)")
    key(window, Qt.Key.Key_D)
    assert panel.count_of(car) == len([a for a in s.annotations if a["label_id"] == car])


def test_the_first_run_hint_shows_until_the_first_edit_and_never_again(qtbot, window, ws_copy):
    c = window.canvas
    assert "Drag: draw a box" in c.hint() and "Shift+Enter" in c.hint() and "F1" in c.hint()
    drag(c, (20, 30), (90, 120))
    assert c.hint() == "" and settings.hint_seen()
    again = open_window(qtbot, ws_copy)
    try:
        assert again.canvas.hint() == ""
    finally:
        again.close()
        again.session.ws.close()


def test_the_theme_follows_the_system_and_switches_dark_light(window):
    from PySide6.QtGui import QPalette

    from labeler.app import theme

    t = theme.for_app()
    try:
        assert t.apply("system") == theme.system_scheme()
        def lightness() -> int:
            QTest.qWait(20)  # the application palette reaches the widgets through posted events
            return window.palette().color(QPalette.ColorRole.Window).lightness()

        key(window, Qt.Key.Key_T, CTRL | SHIFT)
        assert t.mode == "dark" and settings.theme() == "dark" and lightness() < 100
        key(window, Qt.Key.Key_T, CTRL | SHIFT)
        assert t.mode == "light" and lightness() > 150
        key(window, Qt.Key.Key_T, CTRL | SHIFT)
        assert t.mode == "system" and settings.theme() == "system"
    finally:
        t.apply("light")

"""One binding table: every keyed row is an action of the window, no key is bound twice, F1 lists all."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QMainWindow

from labeler.app import keymap
from labeler.app.keymap import BINDINGS, Binding


def test_every_keyed_binding_becomes_an_action_with_its_keys(qtbot):
    w = QMainWindow()
    qtbot.addWidget(w)
    actions = keymap.install(w)
    keyed = [b for b in BINDINGS if b.handler is not None]
    assert set(actions) == {b.name for b in keyed}
    for b in keyed:
        assert [s.toString() for s in actions[b.name].shortcuts()] == [QKeySequence(k).toString() for k in b.keys]
    for name in ("undo", "redo", "submit_and_next", "next_image", "previous_image", "next_unlabeled",
                 "delete_boxes", "shortcuts", "pick_class", "fit", *(f"class_{d}" for d in "123456789"),
                 "nudge_left", "nudge_left_10"):
        assert name in actions
    assert {"Ctrl+Shift+Z", "Ctrl+Y"} <= {s.toString() for s in actions["redo"].shortcuts()}


def test_a_key_bound_twice_is_refused(qtbot):
    w = QMainWindow()
    qtbot.addWidget(w)
    table = [Binding("a", ("Ctrl+K",), "one", lambda w: None, "G"),
             Binding("b", ("Ctrl+K",), "two", lambda w: None, "G")]
    with pytest.raises(ValueError, match="'a' and 'b'"):
        keymap.install(w, table)


def test_the_sheet_lists_every_row_of_the_table(qapp):
    rows = keymap.sheet_rows()
    assert {r.group for r in rows} >= {"Images", "Boxes", "View", "Window", "Mouse"}
    assert all(r.keys and r.description for r in rows)
    for b in BINDINGS:  # every binding is on the sheet: alone, or on its family's line with its key
        row = next(r for r in rows if r.description == (b.family or b.description))
        shown = [QKeySequence(k).toString(QKeySequence.SequenceFormat.NativeText) for k in b.keys
                 if not k.startswith("Num+")] if b.handler else list(b.keys)
        assert all(k in row.keys for k in shown), (b.name, row)
    assert len(rows) < len(BINDINGS)  # the nine class keys and the eight nudges share lines
    classes = next(r for r in rows if r.description.startswith("Class 1–9"))
    assert classes.keys == "1 2 3 4 5 6 7 8 9"

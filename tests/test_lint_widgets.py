"""The findings panel and the quality dock, driven with real clicks and keys (pytest-qt)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMainWindow

from widgets.findings_panel import FindingRow, FindingsPanel
from widgets.quality_dock import QualityDock, Sparkline

ROWS = [FindingRow(1, "bad_box", 0.6, (10, 10, 50, 50), "Car box looks loose", annotation_id=5),
        FindingRow(2, "missed", 0.9, (100, 10, 150, 60), "possibly missed: a Car", suggested_label="Car"),
        FindingRow(3, "tiny", 0.75, (1, 1, 3, 3), "Car box is tiny", state="dismissed", annotation_id=6)]


def make_panel(qtbot) -> FindingsPanel:
    p = FindingsPanel()
    qtbot.addWidget(p)
    p.set_findings(ROWS)
    p.show()
    qtbot.waitExposed(p)
    return p


def item_rect(p: FindingsPanel, row: int):
    return p.list.visualItemRect(p.list.item(row))


def test_open_findings_first_worst_first(qtbot):
    p = make_panel(qtbot)
    assert [r.id for r in p.rows()] == [2, 1, 3]
    assert p.open_count() == 2 and p.summary.text() == "2 open findings, 1 answered"
    assert "[dismissed]" in p.list.item(2).text()
    p.set_findings([])
    assert p.summary.text() == "No findings" and p.open_count() == 0


def test_click_zooms_and_buttons_fix_or_dismiss(qtbot):
    p = make_panel(qtbot)
    with qtbot.waitSignal(p.zoom_requested) as zoom:
        QTest.mouseClick(p.list.viewport(), Qt.MouseButton.LeftButton, pos=item_rect(p, 1).center())
    assert zoom.args == [1, (10, 10, 50, 50)]
    with qtbot.waitSignal(p.fix_requested) as fix:
        QTest.mouseClick(p.fix_button, Qt.MouseButton.LeftButton)
    assert fix.args == [1]
    with qtbot.waitSignal(p.dismiss_requested) as dismiss:
        QTest.mouseClick(p.dismiss_button, Qt.MouseButton.LeftButton)
    assert dismiss.args == [1]
    QTest.mouseClick(p.list.viewport(), Qt.MouseButton.LeftButton, pos=item_rect(p, 2).center())
    assert not p.fix_button.isEnabled() and not p.dismiss_button.isEnabled()  # already answered


def test_list_focus_rules_leave_f_to_the_window(qtbot):
    """F is the window's 'fit' whatever has the focus (the fix has its own window key, Shift+F); with the list
    focused, Delete dismisses, the arrows move between findings (never the window's nudge) and Esc leaves."""
    win = QMainWindow()
    qtbot.addWidget(win)
    fired = []
    for key, name in (("F", "fit"), ("Delete", "delete"), ("Down", "nudge down"), ("Esc", "escape")):
        action = QAction(name, win)
        action.setShortcut(QKeySequence(key))
        action.triggered.connect(lambda *_, n=name: fired.append(n))
        win.addAction(action)
    p = FindingsPanel()
    win.setCentralWidget(p)
    p.set_findings(ROWS)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow)  # window shortcuts fire only in the active window
    p.list.setFocus()
    p.select_first_open()
    assert p.current_id() == 2
    fixes = []
    p.fix_requested.connect(fixes.append)
    QTest.keyClick(p.list, Qt.Key.Key_F)
    assert fired == ["fit"] and fixes == []
    with qtbot.waitSignal(p.dismiss_requested) as dismiss:
        QTest.keyClick(p.list, Qt.Key.Key_Delete)
    assert dismiss.args == [2]
    with qtbot.waitSignal(p.zoom_requested) as zoom:
        QTest.keyClick(p.list, Qt.Key.Key_Down)
    assert zoom.args[0] == 1
    with qtbot.waitSignal(p.leave_requested):
        QTest.keyClick(p.list, Qt.Key.Key_Escape)
    assert fired == ["fit"]
    p.fix_button.click()
    assert fixes == [1]


def test_banner(qtbot):
    p = make_panel(qtbot)
    assert not p.banner.isVisible()
    p.set_banner("2 open findings: fix or dismiss them, then submit again")
    assert p.banner.isVisible()
    p.set_banner(None)
    assert not p.banner.isVisible()


SUMMARY = [
    {"author": "ann", "gold_images": 3, "precision": 0.9, "recall": 0.75, "mean_iou": 0.871,
     "history": [{"created_at": "2026-01-01T10:00", "path": "a.jpg", "precision": 1.0, "recall": 0.5},
                 {"created_at": "2026-01-02T10:00", "path": "b.jpg", "precision": None, "recall": 0.0},
                 {"created_at": "2026-01-03T10:00", "path": "c.jpg", "precision": 0.8, "recall": 1.0}]},
    {"author": "bob", "gold_images": 1, "precision": None, "recall": 0.0, "mean_iou": None,
     "history": [{"created_at": "2026-01-01T11:00", "path": "a.jpg", "precision": None, "recall": 0.0}]},
]


def test_quality_dock_shows_each_annotator(qtbot):
    win = QMainWindow()
    qtbot.addWidget(win)
    dock = QualityDock(win)
    win.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    win.show()
    qtbot.waitExposed(win)
    assert dock.empty.isVisible() and not dock.table.isVisible()
    dock.set_summary(SUMMARY)
    assert not dock.empty.isVisible() and dock.table.rowCount() == 2
    assert [dock.cell_text(0, c) for c in ("Annotator", "Gold", "Precision", "Recall", "Mean IoU")] == \
        ["ann", "3", "90.0 %", "75.0 %", "0.871"]
    assert [dock.cell_text(1, c) for c in ("Precision", "Mean IoU")] == ["–", "–"]
    line = dock.table.cellWidget(0, 5)
    assert isinstance(line, Sparkline) and "b.jpg" in line.toolTip()
    line.resize(100, 30)
    pts = line.points([1.0, None, 0.0])
    assert pts[1] is None and pts[0].y() < pts[2].y() and pts[0].x() < pts[2].x()
    line.grab()  # paints without error, gaps and single points included
    with qtbot.waitSignal(dock.refresh_requested):
        QTest.mouseClick(dock.refresh_button, Qt.MouseButton.LeftButton)

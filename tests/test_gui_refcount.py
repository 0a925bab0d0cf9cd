"""PySide6 must not leak references to None, True or False.

PySide6/shiboken6 6.12.0 on Python 3.11 drops one reference to None on every call of a method that
returns nothing (and to True/False on bool returns). None has only a few thousand references, so a
window that paints and edits for a while frees None and the interpreter aborts ("none_dealloc").
constraints.txt pins a release without the bug; this test fails on one with it.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QRectF
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QWidget


def test_void_and_bool_calls_keep_refcounts(qtbot):
    w = QWidget()
    qtbot.addWidget(w)
    img = QImage(4, 4, QImage.Format.Format_RGB32)
    r = QRectF(0, 0, 1, 1)
    before = (sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False))
    for _ in range(1000):
        img.fill(QColor(1, 2, 3))  # returns nothing
        r.setWidth(3.0)
        w.update()
        w.isVisible()  # returns a bool
        r.isEmpty()
    after = (sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False))
    assert all(abs(a - b) < 50 for a, b in zip(after, before)), (before, after)

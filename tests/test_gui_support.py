"""Helpers for the GUI tests: drive real widgets with QTest mouse and key events (no tests here)."""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

LEFT = Qt.MouseButton.LeftButton
NOMOD = Qt.KeyboardModifier.NoModifier


def drag(canvas, start: tuple[float, float], end: tuple[float, float], button=LEFT, modifiers=NOMOD,
         steps: int = 4) -> None:
    """Press at image point `start`, move in steps, release at `end` (image coordinates)."""
    vp = canvas.viewport()
    a, b = canvas.to_view(*start), canvas.to_view(*end)
    QTest.mousePress(vp, button, modifiers, a)
    for k in range(1, steps + 1):
        QTest.mouseMove(vp, QPoint(a.x() + (b.x() - a.x()) * k // steps, a.y() + (b.y() - a.y()) * k // steps))
    QTest.mouseRelease(vp, button, modifiers, b)


def click(canvas, at: tuple[float, float], modifiers=NOMOD) -> None:
    QTest.mouseClick(canvas.viewport(), LEFT, modifiers, canvas.to_view(*at))


def copy_workspace(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for extra in ("labeler.sqlite-wal", "labeler.sqlite-shm"):
        (dst / extra).unlink(missing_ok=True)
    return dst

"""The first paint of the window, and a start-up report for benchmarks and tests.

Start-up is ordered so that the annotator sees the image first: the window is built and the first
image decoded and painted before anything heavy starts. `after_first_paint(window, fn)` is the seam
for the heavy parts (the prediction worker that imports torch, the linters' warm-up): `fn` runs once
the canvas has painted the current image (its pixels, or a placeholder saying why not), or after
`FALLBACK_MS` when the window is never shown (a test that builds a window without showing it).

`LABELER_STARTUP_REPORT=FILE labeler open WS` appends one JSON line per milestone to FILE: `painted`
(the first image is on screen), `prelabel` (the first pre-label is on screen), `closed` (the window
went) and `exit` (the process is about to end). Each line has the wall-clock time `t` (comparable with
the launching process's clock), whether `torch` is imported yet, and the resident memory in MB.
`bench/bench_start.py` reads it; it changes nothing in what the window does.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, QTimer

if TYPE_CHECKING:
    from labeler.app.main_window import MainWindow

REPORT_ENV = "LABELER_STARTUP_REPORT"
FALLBACK_MS = 3000


def rss_mb() -> float | None:
    """Resident memory of this process in MB (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def image_on_screen(window: MainWindow) -> bool:
    """The current image (or its error placeholder) is on the canvas, or there is no image to show."""
    image = window.session.image
    return image is None or window.ready_image_id == image["id"]


class _PaintWatch(QObject):
    """Calls each waiting function once, right after the canvas painted the current image."""

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        self.done = False
        self.waiting: list[Callable[[], None]] = []
        window.canvas.viewport().installEventFilter(self)
        QTimer.singleShot(FALLBACK_MS, self._fallback)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if not self.done and event.type() == QEvent.Type.Paint and image_on_screen(self.window):
            QTimer.singleShot(0, self._fire)  # after this paint has reached the screen
        return False

    def _fallback(self) -> None:
        """A window never shown still gets its heavy parts; a shown one waits for its image (a slow decode)."""
        if self.window.isVisible() and not image_on_screen(self.window):
            QTimer.singleShot(FALLBACK_MS, self._fallback)
        else:
            self._fire()

    def _fire(self) -> None:
        if self.done:
            return
        self.done = True
        self.window.canvas.viewport().removeEventFilter(self)
        waiting, self.waiting = self.waiting, []
        for fn in waiting:
            fn()


def after_first_paint(window: MainWindow, fn: Callable[[], None]) -> None:
    """Run `fn` once the window has painted its first image (at once when it already has)."""
    watch = window.findChild(_PaintWatch)
    if watch is None:
        watch = _PaintWatch(window)
    if watch.done:
        fn()
    else:
        watch.waiting.append(fn)


def has_painted(window: MainWindow) -> bool:
    watch = window.findChild(_PaintWatch)
    return watch is not None and watch.done


class StartupReport(QObject):
    """Writes the milestones of one window to `path` (see the module docstring)."""

    def __init__(self, window: MainWindow, path: str | Path):
        super().__init__(window)
        self.window = window
        self.path = Path(path)
        self.seen: set[str] = set()
        window.canvas.viewport().installEventFilter(self)
        window.installEventFilter(self)

    def write(self, event: str, **extra) -> None:
        line = {"event": event, "t": time.time(), "torch": "torch" in sys.modules, "rss_mb": rss_mb(), **extra}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def _once(self, event: str, **extra) -> None:
        if event not in self.seen:
            self.seen.add(event)
            self.write(event, **extra)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.window and event.type() == QEvent.Type.Close:
            self._once("closed")
        elif event.type() == QEvent.Type.Paint:
            QTimer.singleShot(0, self._after_paint)
        return False

    def _after_paint(self) -> None:
        w = self.window
        image = w.session.image
        if image is None or not image_on_screen(w):
            return
        self._once("painted", image_id=image["id"], index=w.session.index, status=image["status"])
        if w.canvas.proposal_boxes():
            self._once("prelabel", image_id=image["id"])


def report_to(window: MainWindow) -> StartupReport | None:
    """Attach a start-up report when LABELER_STARTUP_REPORT names a file."""
    path = os.environ.get(REPORT_ENV)
    return StartupReport(window, path) if path else None

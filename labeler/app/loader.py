"""Image decoding off the GUI thread, with prefetch of the neighbours and a bounded cache.

The GUI thread never decodes: it asks `ImageLoader.request(current, neighbours)` and shows what
`loaded` or `failed` delivers. Workers decode with `projects.imaging.read_image` (cv2 releases the
GIL), convert to Qt's fastest raster format and build a small pyramid of halved copies so that a
huge image paints quickly at fit zoom. Requests for images the annotator has already flipped past
are taken back from the pool before they start. One worker by default: with two cores, the other
core stays with the UI.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage

from projects.imaging import ImageError, read_image

PYRAMID_MIN_SIDE = 1024  # stop halving below this


@dataclass
class DecodedImage:
    image_id: int
    levels: list[QImage]  # full resolution first, then halves
    width: int
    height: int
    decode_s: float
    _buffers: list[np.ndarray] = field(default_factory=list, repr=False)  # keep QImage memory alive

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self._buffers)


def decode(image_id: int, path: str | Path, reader: Callable[[str | Path], np.ndarray] = read_image
           ) -> DecodedImage:
    """Decode one file into display levels; raises ImageError naming the file. Thread-safe, no GUI calls."""
    t = time.perf_counter()
    rgb = reader(path)
    bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)  # = QImage.Format_RGB32 in memory on little-endian
    buffers = [bgra]
    while max(buffers[-1].shape[:2]) > PYRAMID_MIN_SIDE:
        prev = buffers[-1]
        buffers.append(cv2.resize(prev, (max(1, prev.shape[1] // 2), max(1, prev.shape[0] // 2)),
                                  interpolation=cv2.INTER_AREA))
    levels = [QImage(b.data, b.shape[1], b.shape[0], b.strides[0], QImage.Format.Format_RGB32) for b in buffers]
    h, w = rgb.shape[:2]
    return DecodedImage(image_id, levels, w, h, time.perf_counter() - t, buffers)


class _Signals(QObject):
    done = Signal(int, object)  # image_id, DecodedImage
    error = Signal(int, str)


class _Job(QRunnable):
    def __init__(self, image_id: int, path: str, signals: _Signals, reader):
        super().__init__()
        self.setAutoDelete(False)  # the loader keeps it to take it back (tryTake) before it runs
        self.image_id, self.path, self.signals, self.reader = image_id, path, signals, reader

    def run(self) -> None:
        try:
            result = decode(self.image_id, self.path, self.reader)
        except ImageError as e:
            self._send(self.signals.error, str(e))
        except Exception as e:  # a decoder bug must not kill the worker thread silently
            self._send(self.signals.error, f"{self.path}: cannot decode ({type(e).__name__}: {e})")
        else:
            self._send(self.signals.done, result)

    def _send(self, signal, payload) -> None:
        try:
            signal.emit(self.image_id, payload)
        except RuntimeError:  # the app is shutting down and the loader is gone: nobody is waiting
            pass


class ImageLoader(QObject):
    loaded = Signal(int, object)  # image_id, DecodedImage (emitted on the GUI thread)
    failed = Signal(int, str)  # image_id, message naming the file

    def __init__(self, threads: int | None = None, cache_bytes: int = 768 << 20, prefetch: bool = True,
                 reader: Callable[[str | Path], np.ndarray] = read_image, parent: QObject | None = None):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads or max(1, min(2, (os.cpu_count() or 2) - 1)))
        self.cache_bytes = cache_bytes
        self.prefetch = prefetch
        self.reader = reader
        self._cache: OrderedDict[int, DecodedImage] = OrderedDict()
        self._pending: dict[int, _Job] = {}
        self._signals = _Signals()
        self._signals.done.connect(self._on_done)
        self._signals.error.connect(self._on_error)
        self.decoded = 0  # images decoded so far (benchmarks report hit rates)

    def cached(self, image_id: int) -> DecodedImage | None:
        d = self._cache.get(image_id)
        if d is not None:
            self._cache.move_to_end(image_id)
        return d

    def request(self, current: tuple[int, str], neighbours: Sequence[tuple[int, str]] = ()) -> DecodedImage | None:
        """Ask for `current` (id, path) and, when prefetching, its neighbours (nearest first).

        Returns the decoded current image at once when cached; otherwise `loaded`/`failed` follows.
        Queued jobs for images outside this window are dropped before they start.
        """
        wanted = [current, *(neighbours if self.prefetch else [])]
        keep = {i for i, _ in wanted}
        for image_id in [i for i in self._pending if i not in keep]:
            if self.pool.tryTake(self._pending[image_id]):
                del self._pending[image_id]
        for rank, (image_id, path) in enumerate(wanted):
            if image_id in self._cache or image_id in self._pending:
                continue
            job = _Job(image_id, path, self._signals, self.reader)
            self._pending[image_id] = job
            self.pool.start(job, priority=100 - rank)
        return self.cached(current[0])

    def _on_done(self, image_id: int, result: DecodedImage) -> None:
        self._pending.pop(image_id, None)
        self.decoded += 1
        self._cache[image_id] = result
        self._cache.move_to_end(image_id)
        total = sum(d.nbytes for d in self._cache.values())
        while total > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            total -= old.nbytes
        self.loaded.emit(image_id, result)

    def _on_error(self, image_id: int, message: str) -> None:
        self._pending.pop(image_id, None)
        self.failed.emit(image_id, message)

    def clear(self) -> None:
        self.pool.clear()
        self._pending.clear()
        self._cache.clear()

    def wait(self, msecs: int = 30000) -> bool:
        """Block until running jobs finish (tests, benchmarks and shutdown)."""
        return self.pool.waitForDone(msecs)

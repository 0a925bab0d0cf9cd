"""The prediction service: one thread that owns the model and answers requests by priority.

Qt-free (the GUI adapts it in `inference/qt_worker.py`; the CLI uses it directly). Design:

* **Priorities.** The image on screen first, then the next few images (prefetch), then background
  batches. A request for an image already queued takes the better priority; requests that are no
  longer needed are cancelled (`retarget` cancels every prefetch the annotator has moved away from).
* **Cache.** Results go to the workspace's predictions table per (image, model version); an image
  already predicted by the current model is answered from the table without a forward pass, so no
  image is ever predicted twice by the same model, across sessions too.
* **Hot swap.** Before each request the thread checks whether a newer model version was registered
  in the workspace and, if so, loads it (in this thread, never the GUI's).
* **Failure.** A missing, corrupt or mismatched model is reported through `on_status` and the service
  keeps answering with "no model" instead of raising into the caller.
* **Threads.** torch runs with fewer intra-op threads than cores, so the UI keeps a core.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from projects.imaging import ImageError, read_image
from projects.workspace import Workspace

Box = tuple[float, float, float, float]


class Priority(IntEnum):
    VISIBLE = 0
    PREFETCH = 1
    BACKGROUND = 2


@dataclass(frozen=True)
class PredictedBox:
    node: str
    box: Box
    score: float


class PredictorLike(Protocol):
    version: str

    def predict(self, images: list[np.ndarray]) -> list[list[Any]]: ...


@dataclass(frozen=True)
class Result:
    image_id: int
    model_id: int | None
    model_version: str | None
    detections: list[PredictedBox]
    cached: bool  # answered from the predictions table
    error: str | None = None


@dataclass(order=True)
class _Request:
    priority: int
    seq: int
    image_id: int | None = field(compare=False)
    cancelled: bool = field(default=False, compare=False)
    job: Callable[[PredictorLike | None], Any] | None = field(default=None, compare=False)
    future: Future | None = field(default=None, compare=False)


def default_threads() -> int:
    """Leave one core to the UI: torch threads = cores - 1 (at least 1)."""
    return max(1, (os.cpu_count() or 2) - 1)


def load_predictor(path: Path, threads: int) -> PredictorLike:
    from inference.predictor import Predictor  # torch is imported only in the worker thread

    return Predictor.from_checkpoint(path, threads=threads)


class PredictionService:
    """Owns a predictor in its own thread. Callbacks run in that thread: adapt them to your UI."""

    def __init__(self, workspace: str | Path, *, threads: int | None = None,
                 on_result: Callable[[Result], None] | None = None,
                 on_status: Callable[[str], None] | None = None,
                 loader: Callable[[Path, int], PredictorLike] = load_predictor,
                 batch_size: int = 1):
        self.workspace = Path(workspace)
        self.threads = threads or default_threads()
        self.on_result = on_result or (lambda r: None)
        self.on_status = on_status or (lambda s: None)
        self.loader = loader
        self.batch_size = batch_size
        self._heap: list[_Request] = []
        self._pending: dict[int, _Request] = {}
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.model_id: int | None = None
        self.model_version: str | None = None
        self.predictor: PredictorLike | None = None
        self.forward_passes = 0  # images sent through the model (for tests and benchmarks)
        self._failed_model: int | None = None

    # --- public API (any thread) ----------------------------------------------------------------
    def start(self) -> PredictionService:
        self._thread = threading.Thread(target=self._run, name="labeler-inference", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def request(self, image_id: int, priority: Priority = Priority.VISIBLE) -> None:
        with self._cv:
            old = self._pending.get(image_id)
            if old is not None and not old.cancelled:
                if old.priority <= priority:
                    return
                old.cancelled = True
            req = _Request(int(priority), next(self._seq), image_id)
            self._pending[image_id] = req
            heapq.heappush(self._heap, req)
            self._cv.notify()

    def request_many(self, image_ids: Iterable[int], priority: Priority = Priority.BACKGROUND) -> None:
        for i in image_ids:
            self.request(i, priority)

    def call(self, job: Callable[[PredictorLike | None], Any], priority: Priority = Priority.VISIBLE) -> Future:
        """Run `job(predictor)` in the model's thread (e.g. a crop-and-redetect); returns a Future.

        The predictor is None when no model is loaded; the job decides what to do then."""
        fut: Future = Future()
        with self._cv:
            heapq.heappush(self._heap, _Request(int(priority), next(self._seq), None, job=job, future=fut))
            self._cv.notify()
        return fut

    def cancel(self, image_id: int) -> None:
        with self._cv:
            req = self._pending.pop(image_id, None)
            if req is not None:
                req.cancelled = True

    def retarget(self, visible: int, prefetch: Iterable[int] = ()) -> None:
        """The annotator moved: `visible` first, then `prefetch`; other prefetches are dropped."""
        keep = {visible, *prefetch}
        with self._cv:
            for image_id, req in list(self._pending.items()):
                if req.priority == Priority.PREFETCH and image_id not in keep:
                    req.cancelled = True
                    del self._pending[image_id]
        self.request(visible, Priority.VISIBLE)
        for i in prefetch:
            self.request(i, Priority.PREFETCH)

    def pending(self) -> int:
        with self._cv:
            return sum(not r.cancelled for r in self._pending.values()) + sum(
                r.job is not None for r in self._heap)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until the queue is empty (tests and the CLI)."""
        with self._cv:
            return self._cv.wait_for(
                lambda: self._stop or (not self._pending and not any(r.job for r in self._heap)), timeout)

    # --- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            import torch

            torch.set_num_threads(self.threads)
        except ImportError:  # a fake predictor in tests needs no torch
            pass
        ws = Workspace.open(self.workspace)
        try:
            self._refresh_model(ws)
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._refresh_model(ws)
                self._serve(ws, batch)
        finally:
            ws.close()

    def _next_batch(self) -> list[_Request] | None:
        with self._cv:
            while True:
                if self._stop:
                    return None
                while self._heap and self._heap[0].cancelled:
                    heapq.heappop(self._heap)
                if self._heap:
                    break
                self._cv.wait()
            if self._heap[0].job is not None:
                return [heapq.heappop(self._heap)]
            batch = []
            while self._heap and len(batch) < self.batch_size and self._heap[0].job is None:
                req = heapq.heappop(self._heap)
                if not req.cancelled:
                    batch.append(req)
            return batch

    def _done(self, req: _Request) -> None:
        with self._cv:
            if req.image_id is None:
                return
            if self._pending.get(req.image_id) is req:
                del self._pending[req.image_id]
            self._cv.notify_all()

    def _refresh_model(self, ws: Workspace) -> None:
        row = ws.latest_model()
        if row is None or row["id"] == self.model_id or row["id"] == self._failed_model:
            if row is None and self.model_id is None and self._failed_model != -1:
                self._failed_model = -1
                self.on_status("no model registered in this workspace: working without pre-labels")
            return
        path = ws.image_path(row["path"])
        self.on_status(f"loading model {row['version']}…")
        try:
            predictor = self.loader(path, self.threads)
        except Exception as e:  # any broken model file: report it, keep the app working
            self._failed_model = row["id"]
            self.on_status(f"model {row['version']} could not be loaded ({e}); working without pre-labels")
            return
        self.predictor, self.model_id, self.model_version = predictor, row["id"], row["version"]
        self.on_status(f"model {row['version']} ready")

    def _serve(self, ws: Workspace, batch: list[_Request]) -> None:
        if batch and batch[0].job is not None:
            req = batch[0]
            try:
                req.future.set_result(req.job(self.predictor))
            except Exception as e:  # the caller sees it on the Future
                req.future.set_exception(e)
            with self._cv:
                self._cv.notify_all()
            return
        todo: list[tuple[_Request, np.ndarray]] = []
        for req in batch:
            if self.predictor is None:
                self._emit(req, Result(req.image_id, None, None, [], False, "no model"))
                continue
            cached = ws.predictions(req.image_id, self.model_id)
            if cached is not None:
                dets = [PredictedBox(r["node"], (r["x1"], r["y1"], r["x2"], r["y2"]), r["score"]) for r in cached]
                self._emit(req, Result(req.image_id, self.model_id, self.model_version, dets, True))
                continue
            try:
                image = read_image(ws.image_path(ws.image(req.image_id)["path"]))
            except ImageError as e:
                self._emit(req, Result(req.image_id, self.model_id, self.model_version, [], False, str(e)))
                continue
            todo.append((req, image))
        if not todo:
            return
        try:
            outputs = self.predictor.predict([img for _, img in todo])
        except Exception as e:
            for req, _ in todo:
                self._emit(req, Result(req.image_id, self.model_id, self.model_version, [], False,
                                       f"inference failed: {e}"))
            traceback.print_exc()
            return
        self.forward_passes += len(todo)
        for (req, _), dets in zip(todo, outputs, strict=True):
            boxes = [PredictedBox(d.node, tuple(float(v) for v in d.box), float(d.score)) for d in dets]
            ws.save_predictions(req.image_id, self.model_id, [(b.node, b.box, b.score) for b in boxes])
            self._emit(req, Result(req.image_id, self.model_id, self.model_version, boxes, False))

    def _emit(self, req: _Request, result: Result) -> None:
        try:
            if not req.cancelled:
                self.on_result(result)
        finally:
            self._done(req)


@dataclass
class BatchRun:
    """What `predict_images` leaves behind: the stopped service, failures and status lines."""

    service: PredictionService
    errors: list[str]
    status: list[str]

    @property
    def loaded(self) -> bool:
        return self.service.predictor is not None and self.service.model_id is not None

    def reason(self) -> str:
        return self.status[-1] if self.status else "the model could not be loaded"


def predict_images(workspace: str | Path, image_ids: list[int], *, threads: int | None = None, batch_size: int = 4,
                   on_result: Callable[[Result], None] | None = None,
                   loader: Callable[[Path, int], PredictorLike] | None = None) -> BatchRun:
    """Predict these images at background priority and wait until all are answered (CLI, lint)."""
    errors: list[str] = []
    status: list[str] = []
    lock = threading.Lock()

    def done(r: Result) -> None:
        with lock:
            if r.error:
                errors.append(f"image {r.image_id}: {r.error}")
            if on_result is not None:
                on_result(r)

    svc = PredictionService(workspace, threads=threads or default_threads(), on_result=done,
                            on_status=status.append, batch_size=max(1, batch_size),
                            **({"loader": loader} if loader is not None else {}))
    svc.request_many(image_ids, Priority.BACKGROUND)
    svc.start()
    try:
        svc.wait_idle(timeout=None)
    finally:
        svc.stop()
    return BatchRun(svc, errors, status)

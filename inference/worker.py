"""The prediction service: one thread that owns the model and answers requests by priority.

Qt-free (the GUI adapts it in `inference/qt_worker.py`; the CLI uses it directly). Design:

* **Priorities.** The image on screen first, then the next few images (prefetch), then background
  batches. A request for an image already queued takes the better priority; requests that are no
  longer needed are cancelled (`retarget` cancels every prefetch the annotator has moved away from).
* **Cache.** Results go to the workspace's predictions table per (image, model version); an image
  already predicted by the current model is answered from the table without a forward pass, so no
  image is ever predicted twice by the same model, across sessions too. Such answers come before the
  model is loaded: torch is imported (in this thread) only when a forward pass or a job needs it.
* **Hot swap.** Before each request the thread checks whether a newer model version was registered
  in the workspace and, if so, loads it (in this thread, never the GUI's).
* **Failure.** A missing, corrupt or mismatched model is reported through `on_status` and the service
  keeps answering with "no model" instead of raising into the caller. Whatever one request raises
  (an unreadable image, a model error, a locked database, a bug) becomes that image's `Result.error`
  and the thread goes on with the next request: it never dies on a request, so nobody waits forever.
  Should the thread stop anyway (the workspace cannot be opened), `on_stopped` and `on_status` say so,
  every queued request is answered with the reason and `wait_idle` returns.
* **Threads.** torch runs with fewer intra-op threads than cores, so the UI keeps a core.
* **Tight boxes.** With `tight_boxes` (inference/tighten.py; on by default) the model also sees each image
  mirrored, in the same thread, and every likely detection's box is averaged with its mirrored twin before it is
  stored; refine jobs get the same switch. Stored predictions are what was computed then: changing the option
  does not redo images already predicted.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from inference.heap import freeze_once
from projects.errors import LabelerError
from projects.imaging import read_image
from projects.store.target import as_target
from projects.values import Detection
from projects.workspace import Workspace

log = logging.getLogger(__name__)


SAVE_WAIT_S = 5.0  # stop() waits this long at most for a save under way to commit
TIGHT_BOXES = True  # the default of `tight_boxes`, chosen by docs/benchmarks/prelabels.md


class Priority(IntEnum):
    VISIBLE = 0
    PREFETCH = 1
    BACKGROUND = 2


class PredictorLike(Protocol):
    version: str

    def predict(self, images: list[np.ndarray]) -> list[list[Any]]: ...


@dataclass(frozen=True)
class Result:
    image_id: int
    model_id: int | None
    model_version: str | None
    detections: list[Detection]
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


def describe(e: BaseException) -> str:
    """One line for a failed request: our own refusals say what is wrong; anything else names its type."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, LabelerError):
        return text or type(e).__name__
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


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
                 loader: Callable[[Path, int], PredictorLike] | None = None,
                 batch_size: int = 1, model_id: int | None = None,
                 on_stopped: Callable[[str], None] | None = None, tight_boxes: bool | None = None):
        self.workspace = as_target(workspace)  # a folder, or a team workspace's URL (a Path would fold its //)
        self.tight_boxes = TIGHT_BOXES if tight_boxes is None else bool(tight_boxes)
        self.pinned_model = model_id  # predict with this registered model only (`labeler predict --model`)
        self.threads = threads or default_threads()
        self.on_result = on_result or (lambda r: None)
        self.on_status = on_status or (lambda s: None)
        self.on_stopped = on_stopped or (lambda reason: None)  # the thread ended without stop(): why
        self.loader = loader or load_predictor
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
        self._failed_models: dict[int, str] = {}  # registered models that would not load (why): skipped
        self._none_announced = False
        self._write_lock = threading.Lock()  # held while predictions are saved; stop() waits for it
        self._torch_ready = False  # torch imported and its threads capped (in this thread, on first need)
        self.stopped_reason: str | None = None  # set when the thread ended for any reason but stop()

    # --- public API (any thread) ----------------------------------------------------------------
    def start(self) -> PredictionService:
        self._thread = threading.Thread(target=self._run, name="labeler-inference", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current step, waiting up to `timeout` s for the thread to end. A save under way
        commits first (waited for on its own, up to `SAVE_WAIT_S`); nothing is written after stop(), so a
        caller that waits less (the window on quit) leaves a thread that is only computing or loading."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._write_lock.acquire(timeout=SAVE_WAIT_S):
            self._write_lock.release()
        if self._thread is not None:
            self._thread.join(timeout)

    def request(self, image_id: int, priority: Priority = Priority.VISIBLE) -> None:
        with self._cv:
            ended = self.stopped_reason  # checked and queued under one lock: _end cannot slip in between
            if ended is None:
                old = self._pending.get(image_id)
                if old is not None and not old.cancelled:
                    if old.priority <= priority:
                        return
                    old.cancelled = True
                req = _Request(int(priority), next(self._seq), image_id)
                self._pending[image_id] = req
                heapq.heappush(self._heap, req)
                self._cv.notify()
        if ended is not None:  # the thread is gone: answer now, nobody would later
            self._emit(_Request(int(priority), next(self._seq), image_id),
                       Result(image_id, self.model_id, self.model_version, [], False, ended))

    def request_many(self, image_ids: Iterable[int], priority: Priority = Priority.BACKGROUND) -> None:
        for i in image_ids:
            self.request(i, priority)

    def call(self, job: Callable[[PredictorLike | None], Any], priority: Priority = Priority.VISIBLE) -> Future:
        """Run `job(predictor)` in the model's thread (e.g. a crop-and-redetect); returns a Future.

        The predictor is None when no model is loaded; the job decides what to do then."""
        fut: Future = Future()
        with self._cv:
            ended = self.stopped_reason
            if ended is None:
                heapq.heappush(self._heap, _Request(int(priority), next(self._seq), None, job=job, future=fut))
                self._cv.notify()
        if ended is not None:  # the thread is gone: answer now, nobody would later
            fut.set_exception(RuntimeError(ended))
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

    def wait_idle(self, timeout: float | None = 60.0) -> bool:
        """Block until the queue is empty, or the thread has ended (tests and the CLI)."""
        with self._cv:
            return self._cv.wait_for(
                lambda: self._stop or self.stopped_reason is not None
                or (not self._pending and not any(r.job for r in self._heap)), timeout)

    # --- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            ws = Workspace.open(self.workspace)
        except BaseException as e:  # reported to the caller, never silently dropped
            self._end(f"the prediction worker cannot open the workspace ({describe(e)})")
            return
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                batch = self._answer_from_cache(ws, batch)  # no torch, no model needed for these
                if not batch:
                    continue
                self._torch_threads()
                self._guarded(self._refresh_model, ws)
                try:
                    self._serve(ws, batch)
                except Exception as e:  # a bug outside the per-request guards: these requests fail, the rest go on
                    log.exception("prediction worker: serving a batch failed")
                    for req in batch:
                        self._fail(req, f"prediction failed ({describe(e)})")
        except BaseException as e:  # the thread is ending: say why, answer everyone
            log.exception("prediction worker stopped")
            self._end(f"the prediction worker stopped ({describe(e)})")
            if not isinstance(e, Exception):
                raise
        finally:
            try:
                ws.close()
            except Exception:
                log.exception("prediction worker: closing the workspace failed")

    def _torch_threads(self) -> None:
        """Import torch (in this thread, the first time a model or a job needs it) and cap its threads."""
        if self._torch_ready:
            return
        self._torch_ready = True
        try:
            import torch

            torch.set_num_threads(self.threads)
        except ImportError:  # a fake predictor in tests needs no torch
            pass

    def _model_to_use(self, ws: Workspace) -> dict | None:
        """The registered model `_refresh_model` would use, without loading it: the loaded one while it is
        still the newest that has not failed (or the pinned one), else that newest one."""
        rows = ws.models()
        if self.pinned_model is not None:
            rows = [r for r in rows if r["id"] == self.pinned_model]
        return next((r for r in reversed(rows) if r["id"] == self.model_id or r["id"] not in self._failed_models),
                    None)

    def _answer_from_cache(self, ws: Workspace, batch: list[_Request]) -> list[_Request]:
        """Answer the image requests whose predictions by the model to use are stored, before that model
        (and torch, seconds of import) is loaded: an image predicted in an earlier session shows its
        pre-labels at once after start. Returns the requests still to serve."""
        if not batch or batch[0].job is not None:
            return batch
        try:
            row = self._model_to_use(ws)
        except Exception:  # a locked database: `_serve` reports it per request
            return batch
        if row is None:
            return batch
        rest = []
        for req in batch:
            try:
                cached = ws.predictions(req.image_id, row["id"])
            except Exception:
                cached = None
            if cached is None:
                rest.append(req)
                continue
            dets = [Detection(r["node"], (r["x1"], r["y1"], r["x2"], r["y2"]), r["score"]) for r in cached]
            self._emit(req, Result(req.image_id, row["id"], row["version"], dets, True))
        return rest

    def _guarded(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # e.g. the database is locked for longer than its timeout: retried next request
            log.exception("prediction worker: %s failed", getattr(fn, "__name__", fn))
            self._status(f"checking for a new model failed ({describe(e)}); retrying with the next image")

    def _status(self, text: str) -> None:
        try:
            self.on_status(text)
        except Exception:  # a broken callback must not stop the thread
            log.exception("prediction worker: on_status failed")

    def _end(self, reason: str) -> None:
        """The thread is ending without stop(): tell the caller, answer every queued request and job."""
        with self._cv:
            self.stopped_reason = reason
            queued = [r for r in self._heap if not r.cancelled]
            self._heap.clear()
        self._status(reason)
        try:
            self.on_stopped(reason)
        except Exception:
            log.exception("prediction worker: on_stopped failed")
        for req in queued:
            self._fail(req, reason)
        with self._cv:
            self._pending.clear()
            self._cv.notify_all()

    def _fail(self, req: _Request, reason: str) -> None:
        if req.future is not None:
            if not req.future.done():
                req.future.set_exception(RuntimeError(reason))
            return
        self._emit(req, Result(req.image_id, self.model_id, self.model_version, [], False, reason))

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
        """Use the newest registered model that loads (or the pinned one). A model that cannot be loaded
        (folder missing, files changed since registration, corrupt) is reported once, naming its version and
        folder, and skipped: a broken registration never costs the session the older model that works."""
        rows = ws.models()
        if self.pinned_model is not None:
            rows = [r for r in rows if r["id"] == self.pinned_model]
        for row in reversed(rows):
            if row["id"] == self.model_id:
                return
            if row["id"] in self._failed_models:
                continue
            path = ws.model_path(row)
            self._status(f"loading model {row['version']}…")
            try:
                predictor = self.loader(path, self.threads)
                checkpoint = getattr(predictor, "checkpoint", None)
                if checkpoint is not None:  # the real predictor: still the registered content, still fits
                    from inference.registry import check_registered

                    check_registered(ws, row, checkpoint)
            except Exception as e:  # any broken model file: report it, keep the app working
                why = f"model {row['version']} ({path}) could not be loaded ({describe(e)})"
                self._failed_models[row["id"]] = why
                self._status(f"{why}; skipped (`labeler models remove {row['version']}` unregisters it)")
                continue
            self.predictor, self.model_id, self.model_version = predictor, row["id"], row["version"]
            self._none_announced = False
            self._status(f"model {row['version']} ready")
            freeze_once()  # later full collections skip the imported code: no GIL-held stall of the window
            return
        if self.model_id is not None:  # the loaded model was removed from the workspace
            self.predictor, self.model_id, self.model_version = None, None, None
        if not self._none_announced:
            self._none_announced = True
            if self.pinned_model is not None and rows:
                return  # its failure, just reported, is the reason
            if not rows:
                self._status("no model registered in this workspace: working without pre-labels"
                             if self.pinned_model is None else "the requested model is no longer registered")
            else:
                newest = next((self._failed_models[r["id"]] for r in reversed(rows) if r["id"] in self._failed_models),
                              "")
                self._status(f"no registered model could be loaded, working without pre-labels: {newest}")

    def _serve(self, ws: Workspace, batch: list[_Request]) -> None:
        if batch and batch[0].job is not None:
            req = batch[0]
            try:
                if req.future.set_running_or_notify_cancel():  # False: the caller cancelled it meanwhile
                    try:
                        value = req.job(self.predictor)
                    except Exception as e:  # the caller sees it on the Future
                        req.future.set_exception(e)
                    else:
                        req.future.set_result(value)
            finally:
                with self._cv:
                    self._cv.notify_all()
            return
        todo: list[tuple[_Request, np.ndarray]] = []
        for req in batch:
            if self.predictor is None:
                self._emit(req, Result(req.image_id, None, None, [], False, "no model"))
                continue
            try:
                cached = ws.predictions(req.image_id, self.model_id)
                if cached is not None:
                    dets = [Detection(r["node"], (r["x1"], r["y1"], r["x2"], r["y2"]), r["score"])
                            for r in cached]
                    self._emit(req, Result(req.image_id, self.model_id, self.model_version, dets, True))
                    continue
                image = read_image(ws.image_path(ws.image(req.image_id)["path"]))
            except Exception as e:  # an unreadable image (ImageError names the file), a deleted row, a lock…
                self._fail(req, describe(e))
                continue
            todo.append((req, image))
        if not todo:
            return
        try:
            outputs = self._predict([img for _, img in todo])
        except Exception as e:
            if len(todo) == 1:
                self._fail(todo[0][0], f"inference failed ({describe(e)})")
                return
            # one bad image must not cost its batch-mates their predictions: retry them one by one
            for req, image in todo:
                self._predict_and_save(ws, req, [image])
            return
        for (req, _), dets in zip(todo, outputs, strict=True):
            self._save(ws, req, dets)

    def _predict(self, images: list[np.ndarray]) -> list[list[Any]]:
        outputs = self.predictor.predict(images)
        if len(outputs) != len(images):
            raise RuntimeError(f"the model answered {len(outputs)} results for {len(images)} images")
        self.forward_passes += len(images)
        tighten = getattr(self.predictor, "tighten", None)  # the real predictor's; a test double has none
        if self.tight_boxes and tighten is not None:
            outputs = tighten(images, outputs)
        return outputs

    def _predict_and_save(self, ws: Workspace, req: _Request, images: list[np.ndarray]) -> None:
        try:
            dets = self._predict(images)[0]
        except Exception as e:
            self._fail(req, f"inference failed ({describe(e)})")
            return
        self._save(ws, req, dets)

    def _save(self, ws: Workspace, req: _Request, dets: list[Any]) -> None:
        """Store one image's detections (one transaction: all of them or none) and answer the request."""
        with self._write_lock:
            if self._stop:  # stopping: nothing more is written (stop() waits only for a save under way)
                self._done(req)
                return
            try:
                boxes = [Detection(d.node, tuple(float(v) for v in d.box), float(d.score)) for d in dets]
                ws.save_predictions(req.image_id, self.model_id, [(b.node, b.box, b.score) for b in boxes])
            except Exception as e:
                failed = e
            else:
                failed = None
        if failed is not None:
            self._fail(req, f"saving the predictions failed ({describe(failed)})")
            return
        self._emit(req, Result(req.image_id, self.model_id, self.model_version, boxes, False))

    def _emit(self, req: _Request, result: Result) -> None:
        try:
            if not req.cancelled:
                self.on_result(result)
        except Exception:  # the caller's callback failed: its problem, not a reason to stop serving
            log.exception("prediction worker: on_result failed for image %s", req.image_id)
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
                   loader: Callable[[Path, int], PredictorLike] | None = None,
                   model_id: int | None = None, tight_boxes: bool | None = None) -> BatchRun:
    """Predict these images at background priority and wait until all are answered (CLI, lint); with
    `model_id`, by that registered model only (else by the newest one that loads)."""
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
                            on_status=status.append, batch_size=max(1, batch_size), loader=loader,
                            model_id=model_id, tight_boxes=tight_boxes)
    svc.request_many(image_ids, Priority.BACKGROUND)
    svc.start()
    try:
        svc.wait_idle(timeout=None)
    finally:
        svc.stop()
    return BatchRun(svc, errors, status)

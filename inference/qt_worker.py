"""The thin Qt adapter of the prediction service: its callbacks become Qt signals.

The service runs in its own Python thread (torch releases the GIL inside ops, so the UI stays
smooth); signals emitted from that thread reach slots in the GUI thread through queued connections.
This is the only module of `inference/` that imports Qt.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from inference.worker import PredictionService, Priority, Result


class QtPredictionWorker(QObject):
    result_ready = Signal(object)  # inference.worker.Result
    status_changed = Signal(str)
    stopped = Signal(str)  # the worker thread ended on its own (not by stop()): no more pre-labels, and why
    job_done = Signal(object, object)  # (tag, value or exception)

    def __init__(self, workspace: str | Path, threads: int | None = None, parent: QObject | None = None,
                 **service_kwargs: Any):
        super().__init__(parent)
        self.last_status = ""
        self.service = PredictionService(workspace, threads=threads, on_result=self._on_result,
                                         on_status=self._on_status, on_stopped=self.stopped.emit,
                                         **service_kwargs)

    def _on_result(self, result: Result) -> None:
        self.result_ready.emit(result)

    def _on_status(self, text: str) -> None:
        self.last_status = text
        self.status_changed.emit(text)

    def start(self) -> QtPredictionWorker:
        self.service.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop after its current step and wait up to `timeout` seconds for it."""
        self.service.stop(timeout)

    def show(self, image_id: int, prefetch: list[int] | tuple[int, ...] = ()) -> None:
        """The annotator is looking at `image_id`; the next images are worth predicting ahead."""
        self.service.retarget(image_id, prefetch)

    def predict_in_background(self, image_ids: list[int]) -> None:
        self.service.request_many(image_ids, Priority.BACKGROUND)

    def run_job(self, tag: object, job) -> Future:
        """Run `job(predictor)` in the model's thread; `job_done(tag, value)` arrives in the GUI thread."""
        fut = self.service.call(job)

        def done(f: Future) -> None:
            try:
                self.job_done.emit(tag, f.result())
            except Exception as e:  # delivered to the GUI as a value, never raised in the worker
                self.job_done.emit(tag, e)

        fut.add_done_callback(done)
        return fut

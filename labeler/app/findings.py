"""Lint on submit, the findings panel, and gold-image scoring, wired into the labeling window.

`FindingsController(window, worker)` adds two docks (lint findings; annotator quality) and registers
with the window's submit pipeline (`labeler.app.submit`): a before_submit check at LINT and an
after_submit hook that scores gold images.

* On submit the current image is linted (`inference.lint.lint_stored_image`, with the latest model's
  stored predictions for it, calibrated on the project's submitted images, or the rules only when the
  model has not predicted it yet). No open finding: the check lets the submit through. Open findings:
  the check vetoes; the findings dock comes up with the worst one selected, zoomed to and framed on the
  canvas, and the annotator fixes (Shift+F) or dismisses (X) each. Submitting again on the same image
  *confirms* the rest: they are dismissed and the image is submitted.
* A fix or a dismissal is one undoable command (`labeler.app.undo.AnswerFindings`) whose redo() writes
  the edit (add the missed box with the model's label, take the suggested class, move the box to the
  model's, delete a duplicate, tiny or zero-area box, clip a box to the image) and the finding's new
  state in one transaction; undo puts both back. A label not in the taxonomy opens the class picker.
* The score calibration (fitted on up to `CALIBRATION_IMAGES` submitted images, once per project and
  model version) and the import of the linters (torch, cleanlab, scikit-learn) run through the
  prediction worker's thread, never the GUI's: asked for as soon as an image is shown, so they are
  usually ready by the first submit. A submit that comes first is held ("checking…") and goes through
  by itself when the calibration arrives, unless the annotator moved on or edited meanwhile.
* After a gold image is submitted it is scored against its reference (`projects.quality`) and the
  quality dock is refreshed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import QDockWidget

from labeler.app import keymap
from labeler.app.submit import LINT, Veto
from projects.quality import annotator_summary, score_submission
from projects.workspace import Workspace
from widgets.findings_panel import FindingRow, FindingsPanel, kind_color, kind_text
from widgets.quality_dock import QualityDock

if TYPE_CHECKING:
    from inference.qt_worker import QtPredictionWorker
    from labeler.app.main_window import MainWindow

DELETE_KINDS = ("duplicate", "zero_area", "tiny")
CALIBRATION_IMAGES = 500  # submitted images read to calibrate the model's scores (once per session)
ZOOM_CONTEXT = 3.0  # the zoomed view shows about three times the box's size
SUBMIT_ORDER = 100  # after_submit order of gold scoring


def _row(f: dict[str, Any]) -> FindingRow:
    return FindingRow(f["id"], f["kind"], f["score"], (f["x1"], f["y1"], f["x2"], f["y2"]), f["message"],
                      f["state"], f["annotation_id"], f.get("suggested_label"))


def _calibrate(folder: str | Path, project: str, model_id: int):
    """The calibration job (runs in the worker's thread, with its own connection to the workspace)."""
    from inference.lint import project_calibration

    with Workspace.open(folder) as ws:
        return project_calibration(ws, project, model_id, limit=CALIBRATION_IMAGES)


class Background(QObject):
    """Runs Qt-free jobs off the GUI thread and calls back on it.

    Jobs go to the prediction worker's thread when the window has one (it owns torch and leaves a core to
    the UI), else to one private thread (the lint dock without pre-labels, scripts and tests)."""

    _finished = Signal(object, object)  # callback, the job's value or exception

    def __init__(self, worker: QtPredictionWorker | None, parent: QObject | None = None):
        super().__init__(parent)
        self.worker = worker
        self._pool: ThreadPoolExecutor | None = None
        self._finished.connect(self._deliver)

    def run(self, job: Callable[[], Any], callback: Callable[[Any], None]) -> Future:
        service = self.worker.service if self.worker is not None else None
        if service is not None and service.stopped_reason is None:
            from inference.worker import Priority

            fut = service.call(lambda predictor: job(), Priority.PREFETCH)  # after the image on screen
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="labeler-lint")
            fut = self._pool.submit(job)
        fut.add_done_callback(lambda f: self._done(callback, f))
        return fut

    def _done(self, callback: Callable[[Any], None], fut: Future) -> None:  # in the job's thread
        try:
            value = fut.result()
        except BaseException as e:  # delivered to the GUI as a value (a cancelled job too)
            value = e
        try:
            self._finished.emit(callback, value)
        except RuntimeError:  # the window is gone
            pass

    @Slot(object, object)
    def _deliver(self, callback: Callable[[Any], None], value: Any) -> None:
        callback(value)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class FindingsController(QObject):
    def __init__(self, window: MainWindow, worker: QtPredictionWorker | None = None):
        super().__init__(window)
        self.w = window
        self.session = window.session
        self.panel = FindingsPanel()
        self.dock = QDockWidget("Lint findings", window)
        self.dock.setObjectName("findings_dock")
        self.dock.setWidget(self.panel)
        self.quality = QualityDock(window)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.quality)
        window.tabifyDockWidget(self.dock, self.quality)
        self.dock.raise_()
        self.pending: int | None = None  # the image whose open findings are on review
        self._model_id: int | None = None  # the model version of the findings shown
        self.calibrations: dict[tuple[str, int], Any] = {}  # (project, model id) -> ScoreCalibration or None
        self._asked: set[tuple[str, int]] = set()
        self._held: tuple[int, int] | None = None  # a submit waiting for the calibration: (image id, undo index)
        self.background = Background(worker, self)
        window.submit_pipeline.before_submit("lint findings", LINT, self.check)
        window.submit_pipeline.after_submit("score gold image", SUBMIT_ORDER, self.score_gold)
        self.panel.zoom_requested.connect(self.zoom_to)
        self.panel.fix_requested.connect(self.fix)
        self.panel.dismiss_requested.connect(self.dismiss)
        self.panel.leave_requested.connect(self.w.canvas.setFocus)
        self.quality.refresh_requested.connect(self.refresh_quality)
        self.session.image_changed.connect(self._on_image_changed)
        self.session.annotations_changed.connect(self.refresh)  # an undone fix opens its finding again
        self.session.project_changed.connect(self.refresh_quality)
        window.destroyed.connect(self.background.shutdown)
        self.background.run(lambda: importlib.import_module("inference.lint"), lambda value: None)  # warm up
        self._on_image_changed()
        self.refresh_quality()

    # --- what is shown -----------------------------------------------------------------------
    def _image_id(self) -> int | None:
        return self.session.image["id"] if self.session.image else None

    def _latest_model_id(self) -> int | None:
        row = self.session.ws.latest_model()
        return row["id"] if row else None

    def _on_image_changed(self) -> None:
        self.pending = None
        self._held = None
        self.panel.set_banner(None)
        self.w.canvas.set_marker(None)
        self._model_id = self._latest_model_id()
        if self._model_id is not None:
            self.request_calibration(self._model_id)
        self.refresh()

    def refresh(self) -> None:
        """The stored findings of the current image: of the latest model, or of a rules-only lint."""
        image_id = self._image_id()
        if image_id is None:
            self.panel.set_findings([])
            self.w.canvas.set_marker(None)
            return
        rows = self.session.ws.lint_findings(image_id)
        mine = [r for r in rows if r["model_id"] == self._model_id] or [r for r in rows if r["model_id"] is None]
        self.panel.set_findings([_row(r) for r in mine])
        n = self.panel.open_count()
        # the tab's title stays "Lint findings": a count in it widened the tabs, and with them the dock and
        # every panel, each time findings appeared; the count is in the panel's own summary line
        if self.pending == image_id and n == 0:
            self.panel.set_banner("Every finding is answered: submit again (Enter) to submit the image.")
        self._mark(self.panel.current_row())

    def refresh_quality(self) -> None:
        self.quality.set_summary(annotator_summary(self.session.ws.quality_scores(self.session.project or None)))

    def _mark(self, r: FindingRow | None) -> None:
        """Frame the selected finding's box on the canvas (a missed object has no box of its own there)."""
        if r is None:
            self.w.canvas.set_marker(None)
            return
        tag = f"{kind_text(r.kind)} {r.score:.2f}" + (f" → {r.suggested_label}" if r.suggested_label else "")
        self.w.canvas.set_marker(r.box, tag if r.state == "open" else f"{tag} [{r.state}]", kind_color(r.kind))

    # --- calibration, through the worker ---------------------------------------------------------
    def request_calibration(self, model_id: int) -> None:
        key = (self.session.project, model_id)
        if key in self.calibrations or key in self._asked:
            return
        self._asked.add(key)
        self.background.run(lambda: _calibrate(self.session.ws.location, key[0], model_id),
                            lambda value: self._on_calibrated(key, value))

    def _on_calibrated(self, key: tuple[str, int], value: Any) -> None:
        self._asked.discard(key)
        if isinstance(value, BaseException):  # lint without calibration rather than never
            self.session.message.emit(f"lint: calibrating the model's scores failed ({value}); raw scores used")
            value = None
        self.calibrations[key] = value
        held, self._held = self._held, None
        if held is not None and held == (self._image_id(), self.session.undo_stack.index()):
            self.w.submit()  # the submit the annotator asked for, now that the linter can answer

    def calibrated(self) -> bool:
        """The current project's calibration for the latest model is ready (or none is needed)."""
        model_id = self._latest_model_id()
        return model_id is None or (self.session.project, model_id) in self.calibrations

    # --- submit --------------------------------------------------------------------------------
    def _lint_model(self, image_id: int) -> int | None:
        """The model whose stored predictions lint this image; None: it has none, the rules only."""
        model_id = self._latest_model_id()
        if model_id is not None and self.session.ws.predictions(image_id, model_id) is None:
            return None
        return model_id

    def lint_current(self, model_id: int | None) -> int:
        """Lint the current image now and show its findings; returns the number of open ones."""
        from inference.lint import lint_stored_image

        image_id = self._image_id()
        if image_id is None:
            return 0
        calibration = self.calibrations.get((self.session.project, model_id)) if model_id is not None else None
        lint_stored_image(self.session.ws, image_id, model_id, self.session.ws.project_view(self.session.project),
                          calibration=calibration)
        self._model_id = model_id
        self.refresh()
        return self.panel.open_count()

    def check(self, image: dict[str, Any]) -> Veto | None:
        """The LINT check of the submit pipeline."""
        image_id = image["id"]
        if self.pending == image_id:  # the annotator confirms what is left
            open_ids = [r.id for r in self.panel.rows() if r.state == "open"]
            if open_ids and not self.session.answer_findings(
                    open_ids, "dismissed", text=f"confirm the image: dismiss {len(open_ids)} lint finding"
                                                f"{'s' if len(open_ids) != 1 else ''}"):
                return Veto("not submitted: the findings could not be dismissed")
            self.pending = None
            return None
        if image["status"] == "submitted":
            return None
        model_id = self._lint_model(image_id)
        if model_id is not None and (self.session.project, model_id) not in self.calibrations:
            self.request_calibration(model_id)
            self._held = (image_id, self.session.undo_stack.index())
            return Veto("checking the image: the linter is still calibrating on this project's submitted images; "
                        "the image is submitted as soon as it can answer", retry=True)
        n = self.lint_current(model_id)
        if not n:
            return None
        self.pending = image_id
        s = "s" if n != 1 else ""
        self.panel.set_banner(f"{n} open finding{s} on this image: fix (Shift+F) or dismiss (X) each, "
                              "or submit again (Enter) to confirm the image as it is.")
        self.dock.show()
        self.dock.raise_()
        self.panel.select_first_open()
        self.panel.list.setFocus()  # arrows move between findings; F still fits, Esc goes back to the canvas
        return Veto(f"not submitted yet: {n} lint finding{s} to review")

    def score_gold(self, image_id: int) -> None:
        """The after_submit hook: a gold image is scored against its reference."""
        score = score_submission(self.session.ws, image_id)
        if score is not None:
            self.refresh_quality()
            self.session.message.emit(f"gold image scored: recall {_pct(score.recall)}, "
                                      f"precision {_pct(score.precision)}")

    # --- answers -------------------------------------------------------------------------------
    def _finding(self, finding_id: int) -> FindingRow | None:
        return next((r for r in self.panel.rows() if r.id == finding_id), None)

    def zoom_to(self, finding_id: int, box) -> None:
        c = self.w.canvas
        x1, y1, x2, y2 = box
        bw, bh = max(8.0, x2 - x1), max(8.0, y2 - y1)
        view = c.viewport().rect()
        target = min(view.width() / (ZOOM_CONTEXT * bw), view.height() / (ZOOM_CONTEXT * bh))
        target = min(target, max(c.scale_factor(), 4.0))  # never zoom in past 4x for a tiny box
        if c.scale_factor() > 0:
            c.zoom_by(target / c.scale_factor())
        c.centerOn((x1 + x2) / 2, (y1 + y2) / 2)
        r = self._finding(finding_id)
        self._mark(r)
        if r is not None and r.annotation_id is not None and r.annotation_id in c.annotation_boxes():
            c.select([r.annotation_id])
            self.w.annotation_list.set_selected([r.annotation_id])

    def fix_current(self) -> None:
        """Shift+F: fix the finding selected in the dock."""
        r = self.panel.current_row()
        if r is None or r.state != "open":
            self.session.message.emit("no open lint finding is selected (submit with Enter to lint the image)")
            return
        self.fix(r.id)

    def dismiss_current(self) -> None:
        """X: dismiss the finding selected in the dock."""
        r = self.panel.current_row()
        if r is None or r.state != "open":
            self.session.message.emit("no open lint finding is selected (submit with Enter to lint the image)")
            return
        self.dismiss(r.id)

    def fix(self, finding_id: int) -> None:
        r = self._finding(finding_id)
        if r is None or r.state != "open":
            return
        s = self.session
        label_id = next((lab["id"] for lab in s.labels if lab["name"] == r.suggested_label), None)
        what = kind_text(r.kind).lower()
        if r.kind == "missed" and label_id is not None:
            edit = s.add_command(r.box, label_id, provenance="prelabel_accepted", model_id=self._model_id)
            text = f"fix lint finding: add the missed {r.suggested_label} box"
        elif r.kind == "wrong_class" and label_id is not None and r.annotation_id is not None:
            edit = s.label_command([r.annotation_id], label_id)
            text = f"fix lint finding: class → {r.suggested_label}"
        elif r.kind in ("bad_box", "out_of_image") and r.annotation_id is not None:
            edit = s.change_command({r.annotation_id: r.box},
                                    provenance="prelabel_adjusted" if r.kind == "bad_box" else None)
            text = "fix lint finding: move the box to the model's" if r.kind == "bad_box" else \
                "fix lint finding: clip the box to the image"
        elif r.kind in DELETE_KINDS and r.annotation_id is not None:
            edit = s.delete_command([r.annotation_id])
            text = f"fix lint finding: delete the {what} box"
        elif r.kind == "unknown_label" and r.annotation_id is not None:
            self.w.canvas.select([r.annotation_id])
            self.w.open_class_picker()
            return  # the finding is answered by the class the annotator picks; the next lint checks it
        else:
            s.message.emit(f"no automatic fix for this {what} finding")
            return
        if s.answer_findings([finding_id], "fixed", edit, text):
            added = getattr(edit, "annotation_id", None)
            if added is not None:
                self.w.canvas.select([added])
                self.w.annotation_list.set_selected([added])
        self._next_open()

    def dismiss(self, finding_id: int) -> None:
        r = self._finding(finding_id)
        if r is None or r.state != "open":
            return
        self.session.answer_findings([finding_id], "dismissed", text=f"dismiss lint finding: {kind_text(r.kind)}")
        self._next_open()

    def _next_open(self) -> None:
        """After an answer: the next open finding, or (none left) the focus back on the canvas."""
        self.refresh()
        if self.panel.open_count():
            self.panel.select_first_open()
        else:
            self.w.canvas.setFocus()


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


def install(window: MainWindow, worker: QtPredictionWorker | None = None) -> FindingsController:
    """Add the findings and quality docks to the window and the lint check to its submit pipeline."""
    controller = FindingsController(window, worker)
    window.findings = controller
    return controller


# --- key bindings (rows of the window's one key table) ---------------------------------------------
@keymap.bind("fix_finding", ("Shift+F",), "Fix the selected lint finding with the model's suggestion (undoable)",
             "Lint findings")
def fix_finding(w: MainWindow) -> None:
    if w.findings is not None:
        w.findings.fix_current()


@keymap.bind("dismiss_finding", ("X",), "Dismiss the selected lint finding: the annotation is right (undoable)",
             "Lint findings")
def dismiss_finding(w: MainWindow) -> None:
    if w.findings is not None:
        w.findings.dismiss_current()

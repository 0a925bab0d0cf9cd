"""Pre-labels and click-to-refine, wired into the labeling window.

`install(window)` starts the inference worker (`inference.qt_worker`, its own thread, CUDA when
present, else CPU with fewer torch threads than cores) and shows each image's detections as dashed
proposals named in the current project's labels (`inference.prelabels`). The model never blocks
the UI: the window asks for the image on screen first and the next ones as prefetch, and results
arrive as signals. Every action is an ordinary undoable edit through the session:

* Enter (or a double-click) accepts the selected proposal — provenance `prelabel_accepted`;
* Shift+Enter accepts every proposal above the confidence threshold, as one undo step;
* Delete rejects the selected proposal (undoable; it is hidden for this session);
* dragging or resizing a proposal makes it an annotation with the new box — `prelabel_adjusted`;
* Alt+click on an object, or Alt+drag a rough box, asks the model for a tight box (from the cached
  detections, else a forward pass on a crop, else GrabCut); R does the same for the selected box.
  The answer is shown as a proposal to accept with Enter (`refined`); it never replaces a box silently.
* [ and ] lower and raise the confidence threshold (also a slider in the toolbar).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QElapsedTimer, QEvent, QEventLoop, QObject, Qt
from PySide6.QtGui import QUndoCommand
from PySide6.QtWidgets import QApplication, QLabel, QSlider

from inference.prelabels import Proposal, customer_proposals
from inference.qt_worker import QtPredictionWorker
from inference.refine import refine_box, refine_click
from inference.worker import Result
from labeler.app import keymap
from labeler.app.submit import SELECTION, Veto
from projects.imaging import read_image

if TYPE_CHECKING:
    from labeler.app.main_window import MainWindow

DEFAULT_THRESHOLD = 0.4
REFINED_ID = -1  # the proposal id of a refine answer (proposal ids are otherwise >= 0)
PREFETCH = 3


@dataclass(frozen=True)
class RefineAnswer:
    box: tuple[float, float, float, float]
    label_id: int | None
    score: float
    source: str
    annotation_id: int | None  # the box it would replace (R on a selected box), or None for a new one


class _Hide(QUndoCommand):
    """Hides proposals that were rejected (or turned into annotations); writes nothing, undo shows them."""

    def __init__(self, ctl: PrelabelController, image_id: int, keys: list[int], text: str = ""):
        super().__init__(text or ("reject proposal" if len(keys) == 1 else f"reject {len(keys)} proposals"))
        self.ctl, self.image_id, self.keys = ctl, image_id, keys

    def redo(self) -> None:
        self.ctl.rejected.setdefault(self.image_id, set()).update(self.keys)
        self.ctl.render()

    def undo(self) -> None:
        self.ctl.rejected.get(self.image_id, set()).difference_update(self.keys)
        self.ctl.render()


class PrelabelController(QObject):
    def __init__(self, window: MainWindow, worker: QtPredictionWorker | None = None):
        super().__init__(window)
        self.w = window
        self.session = window.session
        self.threshold = DEFAULT_THRESHOLD
        self.detections: dict[int, list[Any]] = {}  # image id -> the model's detections (all scores)
        self.model_ids: dict[int, int | None] = {}
        self.rejected: dict[int, set[int]] = {}
        self.proposals: dict[int, Proposal] = {}  # what the canvas shows now, by proposal id
        self.refined: RefineAnswer | None = None
        self._view = None
        self.worker = worker or QtPredictionWorker(self.session.ws.folder, parent=self)
        self.status = QLabel("model: starting…")
        self.status.setToolTip("The pre-label model and what it is doing")
        window.statusBar().addPermanentWidget(self.status)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(5, 95)
        self.slider.setValue(round(self.threshold * 100))
        self.slider.setFixedWidth(120)
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.slider.setToolTip("Confidence threshold of pre-labels ([ and ])")
        self.slider_label = QLabel()
        bar = window.toolbar if hasattr(window, "toolbar") else window.addToolBar("Pre-labels")
        bar.addSeparator()
        bar.addWidget(QLabel(" Pre-labels ≥ "))
        bar.addWidget(self.slider)
        bar.addWidget(self.slider_label)
        self.slider.valueChanged.connect(lambda v: self.set_threshold(v / 100))
        self._update_slider_label()
        self.worker.result_ready.connect(self._on_result)
        self.worker.status_changed.connect(self._on_status)
        self.worker.stopped.connect(self._on_stopped)
        self.stopped: str | None = None  # why the worker ended on its own; None while it serves
        self.worker.job_done.connect(self._on_job_done)
        c = window.canvas
        c.proposal_accepted.connect(self.accept)
        c.proposal_rejected.connect(lambda pid: self.reject([pid]))
        if hasattr(c, "proposal_adjusted"):
            c.proposal_adjusted.connect(self.adjust)
        if hasattr(c, "refine_clicked"):
            c.refine_clicked.connect(self.refine_at)
            c.refine_dragged.connect(self.refine_rough)
        self.session.image_changed.connect(self._on_image_changed)
        self.session.annotations_changed.connect(self.render)
        self.session.project_changed.connect(self.render)
        # Enter accepts a selected proposal before anything else may stop or run the submit
        window.submit_pipeline.before_submit("accept selected pre-label", SELECTION, self._accept_before_submit)
        window.installEventFilter(self)
        self.worker.start()
        self._on_image_changed()

    def _accept_before_submit(self, image: dict) -> Veto | None:
        """The submit check: with a proposal selected, Enter accepts it and the image is not submitted."""
        return Veto() if self.accept_selected() else None

    def eventFilter(self, obj, event) -> bool:
        if obj is self.w and event.type() == QEvent.Type.Close:
            self.shutdown()
        return False

    def wait_for_current(self, timeout_s: float) -> bool:
        """Process events until the current image's detections arrived (screenshots, tests)."""
        clock = QElapsedTimer()
        clock.start()
        while clock.elapsed() < timeout_s * 1000:
            image_id = self._image_id()
            if image_id is None or image_id in self.detections or self.worker.service.predictor is None and \
                    self.worker.last_status and "loading" not in self.worker.last_status:
                QApplication.processEvents()
                return image_id is None or image_id in self.detections
            QApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        return False

    # --- model → proposals ---------------------------------------------------------------------
    def _image_id(self) -> int | None:
        return self.session.image["id"] if self.session.image else None

    def _on_image_changed(self) -> None:
        self.refined = None
        image_id = self._image_id()
        if image_id is None:
            return
        prefetch = [i for i, _ in self.session.neighbours(PREFETCH)][: PREFETCH]
        self.worker.show(image_id, prefetch)
        self.render()

    def _on_result(self, result: Result) -> None:
        if result.error and not result.detections:  # this image only: the worker goes on with the next
            if result.image_id == self._image_id() and result.error != "no model" and self.stopped is None:
                self.w.statusBar().showMessage(f"pre-labels: {result.error}", 8000)
            return
        self.detections[result.image_id] = result.detections
        self.model_ids[result.image_id] = result.model_id
        if result.image_id == self._image_id():
            self.render()

    def _on_status(self, text: str) -> None:
        if self.stopped is not None:  # nothing after a stop may make the bar say "ready" again
            return
        self.status.setText(f"model: {text}")
        if "could not be loaded" in text or "no model" in text:
            self.w.statusBar().showMessage(text, 10000)

    def _on_stopped(self, reason: str) -> None:
        """The worker thread ended: say so where "model … ready" was, and keep saying it."""
        self.stopped = reason
        self.status.setText("model: stopped, no pre-labels")
        self.status.setToolTip(reason)
        self.w.statusBar().showMessage(f"pre-labels stopped: {reason}")

    def set_threshold(self, value: float) -> None:
        self.threshold = min(0.95, max(0.05, round(value, 2)))
        if self.slider.value() != round(self.threshold * 100):
            self.slider.setValue(round(self.threshold * 100))
        self._update_slider_label()
        self.render()

    def _update_slider_label(self) -> None:
        self.slider_label.setText(f" {self.threshold:.2f} ")

    def render(self) -> None:
        """Show the current image's proposals above the threshold, in the project's labels."""
        image_id = self._image_id()
        dets = self.detections.get(image_id, []) if image_id is not None else []
        view = self.view() if dets else None
        props = customer_proposals(dets, view, self.session.annotations, self.threshold) if dets else []
        hidden = self.rejected.get(image_id, set())
        self.proposals = {p.key: p for p in props if p.key not in hidden}
        by_name = {lab["name"]: lab for lab in self.session.labels}
        specs = [(p.key, p.label, by_name[p.label]["color"] or "#e6194b", p.box, p.score)
                 for p in self.proposals.values()]
        if self.refined is not None:
            lab = self.session.label_by_id.get(self.refined.label_id or -1)
            name = lab["name"] if lab else "refined"
            specs.append((REFINED_ID, f"{name} ({self.refined.source})", lab["color"] if lab else "#ffffff",
                          self.refined.box, self.refined.score))
        self.w.canvas.set_proposals(specs)

    def view(self):
        """The current project's taxonomy view, read once per project (render runs on every edit)."""
        if self._view is None or self._view[0] != self.session.project:
            self._view = (self.session.project, self.session.ws.project_view(self.session.project))
        return self._view[1]

    def _label_id(self, label_name: str) -> int | None:
        return next((lab["id"] for lab in self.session.labels if lab["name"] == label_name), None)

    # --- accept / reject / adjust --------------------------------------------------------------
    def selected(self) -> list[int]:
        return self.w.canvas.selected_proposal_ids()

    def accept_selected(self) -> bool:
        """Enter: accept the selected proposals; False when none is selected (Enter then submits)."""
        ids = self.selected()
        if not ids:
            return False
        self._accept_many(ids)
        return True

    def accept(self, proposal_id: int) -> None:
        self._accept_many([proposal_id])

    def accept_all(self) -> None:
        ids = [k for k, p in self.proposals.items() if p.score >= self.threshold]
        if not ids:
            self.w.statusBar().showMessage("no proposal above the threshold", 3000)
            return
        self._accept_many(ids)

    def _accept_many(self, ids: list[int], box=None) -> None:
        """One undo step: the new annotations, and the proposals they came from hidden."""
        stack = self.session.undo_stack
        image_id = self._image_id()
        kind = "adjust" if box is not None else "accept"
        stack.beginMacro(f"{kind} pre-label" if len(ids) == 1 else f"{kind} {len(ids)} pre-labels")
        try:
            for pid in ids:
                self._accept_one(pid, box)
            keys = [i for i in ids if i in self.proposals]
            if keys and image_id is not None:
                stack.push(_Hide(self, image_id, keys, "hide accepted"))
        finally:
            stack.endMacro()

    def _accept_one(self, pid: int, box=None) -> None:
        image_id = self._image_id()
        if pid == REFINED_ID and self.refined is not None:
            ans, self.refined = self.refined, None
            if ans.annotation_id is not None:
                self.session.change_boxes({ans.annotation_id: box or ans.box}, provenance="refined")
            else:
                label_id = ans.label_id if ans.label_id is not None else self.session.current_label_id
                self.session.add_box(box or ans.box, label_id, "refined", self.model_ids.get(image_id))
            self.render()
            return
        p = self.proposals.get(pid)
        if p is None:
            return
        provenance = "prelabel_adjusted" if box is not None else "prelabel_accepted"
        self.session.add_box(box or p.box, self._label_id(p.label), provenance, self.model_ids.get(image_id))

    def adjust(self, proposal_id: int, box) -> None:
        """A proposal was dragged or resized: it becomes an annotation with the new box."""
        self._accept_many([proposal_id], tuple(box))

    def reject_selected(self) -> bool:
        ids = self.selected()
        if not ids:
            return False
        self.reject(ids)
        return True

    def reject(self, ids: list[int]) -> None:
        if REFINED_ID in ids:
            self.refined = None
            ids = [i for i in ids if i != REFINED_ID]
            self.render()
        image_id = self._image_id()
        if ids and image_id is not None:
            self.session.undo_stack.push(_Hide(self, image_id, ids))

    # --- refine --------------------------------------------------------------------------------
    def _allowed_nodes(self) -> set[str]:
        view = self.view()
        return {n for n in view.sup.names if view.label_for(n) is not None}

    def _job(self, kind: str, arg, annotation_id: int | None):
        image_id = self._image_id()
        path = self.session.image_file(image_id)
        dets = list(self.detections.get(image_id, []))
        allowed = self._allowed_nodes()

        def job(predictor):
            image = read_image(path)
            predict = (lambda crop: predictor.predict([crop])[0]) if predictor is not None else None
            if kind == "click":
                return refine_click(image, arg, dets, predict, allowed)
            return refine_box(image, arg, dets, predict, allowed)

        self.w.statusBar().showMessage("refining…", 2000)
        self.worker.run_job((kind, image_id, annotation_id), job)

    def refine_at(self, x: float, y: float) -> None:
        if self._image_id() is not None:
            self._job("click", (float(x), float(y)), None)

    def refine_rough(self, box) -> None:
        if self._image_id() is not None:
            self._job("box", tuple(float(v) for v in box), None)

    def refine_selected(self) -> None:
        ids = self.w.canvas.selected_ids()
        if len(ids) != 1:
            self.w.statusBar().showMessage("select one box to refine (or Alt+click an object)", 4000)
            return
        a = next(a for a in self.session.annotations if a["id"] == ids[0])
        self._job("box", (a["x1"], a["y1"], a["x2"], a["y2"]), ids[0])

    def _on_job_done(self, tag, value) -> None:
        kind, image_id, annotation_id = tag
        if image_id != self._image_id():
            return
        if isinstance(value, Exception):
            self.w.statusBar().showMessage(f"refine failed: {value}", 8000)
            return
        if value is None:
            self.w.statusBar().showMessage("refine found no object there", 4000)
            return
        view = self.view()
        label = view.label_for(value.node) if value.node else None
        label_id = self._label_id(label.name) if label else None
        if annotation_id is not None:
            label_id = next((a["label_id"] for a in self.session.annotations if a["id"] == annotation_id), label_id)
        self.refined = RefineAnswer(tuple(value.box), label_id, float(value.score), value.source, annotation_id)
        self.render()
        self.w.canvas.select([], [REFINED_ID])
        self.w.statusBar().showMessage(f"refined box from {value.source}: Enter accepts, Delete rejects", 5000)

    def shutdown(self) -> None:
        self.worker.stop()


def install(window: MainWindow, worker: QtPredictionWorker | None = None) -> PrelabelController:
    controller = PrelabelController(window, worker)
    window.prelabels = controller
    return controller


# --- key bindings (rows of the window's one key table) ---------------------------------------------
@keymap.bind("accept_all_proposals", ("Shift+Return", "Shift+Enter"),
             "Accept every pre-label above the confidence threshold", "Pre-labels")
def accept_all_proposals(w: MainWindow) -> None:
    if w.prelabels is not None:
        w.prelabels.accept_all()


@keymap.bind("refine_selected", ("R",), "Refine the selected box with the model (shown for Enter to accept)",
             "Pre-labels")
def refine_selected(w: MainWindow) -> None:
    if w.prelabels is not None:
        w.prelabels.refine_selected()


@keymap.bind("threshold_down", ("[",), "Lower the pre-label confidence threshold by 0.05", "Pre-labels")
def threshold_down(w: MainWindow) -> None:
    if w.prelabels is not None:
        w.prelabels.set_threshold(w.prelabels.threshold - 0.05)


@keymap.bind("threshold_up", ("]",), "Raise the pre-label confidence threshold by 0.05", "Pre-labels")
def threshold_up(w: MainWindow) -> None:
    if w.prelabels is not None:
        w.prelabels.set_threshold(w.prelabels.threshold + 0.05)


keymap.gesture("refine_click", "Alt+click an object", "Ask the model for a tight box around it")
keymap.gesture("refine_drag", "Alt+drag a rough box", "Ask the model to tighten it (cache, crop, GrabCut)")

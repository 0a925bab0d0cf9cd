"""Pre-labels and click-to-refine, wired into the labeling window.

`install(window)` starts the inference worker (`inference.qt_worker`, its own thread, CUDA when
present, else CPU with fewer torch threads than cores) and shows each image's detections as dashed
proposals named in the current project's labels (`inference.prelabels`). The model never blocks
the UI: the window asks for the image on screen first and the next ones as prefetch, and results
arrive as signals. Every action is an ordinary undoable edit through the session:

* Enter (or a double-click) accepts the selected proposal — provenance `prelabel_accepted`;
* Shift+Enter accepts every proposal above the confidence threshold, as one undo step;
* Delete rejects the selected proposal (undoable);
* dragging or resizing a proposal makes it an annotation with the new box — `prelabel_adjusted`;
* a number key gives the selected proposal another class before Enter accepts it;
* Alt+click on an object, or Alt+drag a rough box, asks the model for a tight box (from the cached
  detections, else a forward pass on a crop, else GrabCut); R does the same for the selected box.
  The answer is shown as a proposal with the class it will get (the model's, else the current class)
  to accept with Enter (`refined`); it never replaces a box silently.
* [ and ] lower and raise the confidence threshold (also a slider in the toolbar).

Each accept, adjust or reject is one `DecideProposals` command: its boxes and the decision, stored per
model version in one transaction, so an answered proposal stays answered when the workspace is opened
again (a newer model version may propose it again), and its undo text names what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QElapsedTimer, QEvent, QEventLoop, QObject, Qt
from PySide6.QtWidgets import QApplication, QLabel, QSlider

from inference.prelabels import Proposal, customer_proposals
from inference.qt_worker import QtPredictionWorker
from inference.worker import Result
from labeler.app import keymap
from labeler.app.startup import after_first_paint
from labeler.app.submit import SELECTION, Veto
from labeler.app.undo import DecideProposals, WorkspaceCommand
from projects.imaging import read_image
from projects.quality import box_iou
from projects.values import DEFAULT_COLOR, box_of

if TYPE_CHECKING:
    from labeler.app.main_window import MainWindow

DEFAULT_THRESHOLD = 0.4
REFINED_ID = -1  # the proposal id of a refine answer (proposal ids are otherwise >= 0)
PREFETCH = 3
SAME_OBJECT_IOU = 0.5  # a proposal this close to the refine answer is the same object: the answer is shown alone
SOURCE_WORDS = {"cache": "model", "redetect": "model, crop", "grabcut": "GrabCut"}  # where a refine answer came from
STOP_WAIT_S = 0.1  # how long closing the window waits for the worker to end (a save under way always commits)


@dataclass(frozen=True)
class RefineAnswer:
    box: tuple[float, float, float, float]
    label_id: int | None  # the class it gets: the model's for its node, else the current class (number keys change it)
    score: float
    source: str
    annotation_id: int | None  # the box it would replace (R on a selected box), or None for a new one


class _Decide(DecideProposals):
    """A decision that may include the refine answer: accepting or rejecting takes it off the canvas,
    undo shows it again (on its image) as it was."""

    def __init__(self, ctl: PrelabelController, answer: RefineAnswer | None, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ctl, self.answer = ctl, answer

    def redo(self) -> None:
        super().redo()
        if self.answer is not None and not self.isObsolete() and self.ctl.refined == self.answer:
            self.ctl.refined = None
            self.ctl.render()

    def undo(self) -> None:
        super().undo()  # its image is shown again first (an undo may reach back to another one)
        if self.answer is not None and not self.isObsolete() and self.ctl._image_id() == self.image_id:
            self.ctl.refined = self.answer
            self.ctl.render()


class PrelabelController(QObject):
    def __init__(self, window: MainWindow, worker: QtPredictionWorker | None = None):
        super().__init__(window)
        self.w = window
        self.session = window.session
        self.threshold = DEFAULT_THRESHOLD
        self.detections: dict[int, list[Any]] = {}  # image id -> the model's detections (all scores)
        self.model_ids: dict[int, int | None] = {}
        self.retags: dict[int, str] = {}  # proposal id -> the label a number key gave it (current image only)
        self.proposals: dict[int, Proposal] = {}  # what the canvas shows now, by proposal id
        self.refined: RefineAnswer | None = None
        self._view = None
        self.worker = worker or QtPredictionWorker(self.session.ws.location, parent=self)
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
        self._started = False
        after_first_paint(window, self.start_worker)  # the image first; torch loads in the worker after it
        self._on_image_changed()

    def start_worker(self) -> None:
        """Start the prediction worker (once). Its requests are queued from the start: the current image's
        pre-labels come first, from the workspace's cache when they are stored, before the model loads."""
        if not self._started:
            self._started = True
            self.worker.start()

    def _accept_before_submit(self, image: dict) -> Veto | None:
        """The submit check: with a proposal selected, Enter accepts it and the image is not submitted."""
        return Veto() if self.accept_selected() else None

    def eventFilter(self, obj, event) -> bool:
        if obj is self.w and event.type() == QEvent.Type.Close:
            self.shutdown()
        return False

    def wait_for_current(self, timeout_s: float) -> bool:
        """Process events until the current image's detections arrived (screenshots, tests)."""
        self.start_worker()
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
        self.retags = {}
        image_id = self._image_id()
        if image_id is None:
            return
        prefetch = [i for i, _ in self.session.neighbours(PREFETCH)][: PREFETCH]
        self.worker.show(image_id, prefetch)
        self.render()

    def repredict(self) -> None:
        """A newer model version was registered (the follow trainer): ask again for the image on screen and the
        prefetched ones. The worker swaps to the new model on the first of these requests (in its thread) and
        their proposals are replaced as its answers arrive; the decisions already made stay in the database."""
        image_id = self._image_id()
        if image_id is None:
            return
        prefetch = [i for i, _ in self.session.neighbours(PREFETCH)][: PREFETCH]
        self.worker.show(image_id, prefetch)

    def _on_result(self, result: Result) -> None:
        if result.error and not result.detections:  # this image only: the worker goes on with the next
            if result.image_id == self._image_id() and result.error != "no model" and self.stopped is None:
                self.w.statusBar().showMessage(f"pre-labels: {result.error}", 8000)
            return
        if result.image_id == self._image_id() and self.model_ids.get(result.image_id) not in (None, result.model_id):
            self.retags = {}  # another model's proposals: a class given to the old ones does not carry over
        self.detections[result.image_id] = result.detections
        self.model_ids[result.image_id] = result.model_id
        if result.cached and not self.worker.last_status and self.stopped is None:  # answered before any load
            self.status.setText(f"model: {result.model_version} (stored pre-labels)")
            self.status.setToolTip("Pre-labels stored in the workspace are shown at once; the model itself loads "
                                   "when an image needs it")
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
        answered = self._answered(image_id) if dets else []
        props = customer_proposals(dets, view, self.session.annotations, self.threshold,
                                   answered=answered) if dets else []
        if self.refined is not None and props:  # one proposal per object: the refine answer stands alone
            ious = box_iou(np.array([self.refined.box], dtype=np.float64),
                           np.array([p.box for p in props], dtype=np.float64))[0]
            props = [p for p, iou in zip(props, ious) if iou < SAME_OBJECT_IOU]
        self.proposals = {p.key: replace(p, label=self.retags.get(p.key, p.label)) for p in props}
        by_name = {lab["name"]: lab for lab in self.session.labels}
        specs = [(p.key, p.label, by_name[p.label]["color"] or DEFAULT_COLOR, p.box, p.score)
                 for p in self.proposals.values()]
        if self.refined is not None:
            lab = self.session.label_by_id.get(self.refined.label_id if self.refined.label_id is not None else -1)
            name = lab["name"] if lab else "no class"
            score = None if self.refined.source == "grabcut" else self.refined.score  # GrabCut has no score
            specs.append((REFINED_ID, f"{name} ({SOURCE_WORDS.get(self.refined.source, self.refined.source)})",
                          (lab["color"] or DEFAULT_COLOR) if lab else "#ffffff", self.refined.box, score))
        self.w.canvas.set_proposals(specs)

    def _answered(self, image_id: int) -> list[tuple[str, tuple[float, float, float, float]]]:
        """(node, box) of this image's detections already accepted, adjusted or rejected, for the model
        version that made the detections on screen (the database is the truth: read at every render)."""
        model_id = self.model_ids.get(image_id)
        if model_id is None:
            return []
        return [(r["node"], box_of(r)) for r in self.session.ws.proposal_decisions(image_id, model_id)]

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
        self._decide(ids, "accepted")
        return True

    def accept(self, proposal_id: int) -> None:
        self._decide([proposal_id], "accepted")

    def accept_all(self) -> None:
        ids = [k for k, p in self.proposals.items() if p.score >= self.threshold]
        if not ids:
            self.w.statusBar().showMessage("no proposal above the threshold", 3000)
            return
        self._decide(ids, "accepted")

    def adjust(self, proposal_id: int, box) -> None:
        """A proposal was dragged or resized: it becomes an annotation with the new box."""
        self._decide([proposal_id], "adjusted", tuple(box))

    def reject_selected(self) -> bool:
        ids = self.selected()
        if not ids:
            return False
        self.reject(ids)
        return True

    def reject(self, ids: list[int]) -> None:
        self._decide(ids, "rejected")

    def retag(self, ids: list[int], label_id: int) -> None:
        """A number key with proposals selected: they (or the refine answer) get this class; Enter then
        accepts them with it. Nothing is written before the accept."""
        name = self.session.label_by_id[label_id]["name"]
        for pid in ids:
            if pid == REFINED_ID and self.refined is not None:
                self.refined = replace(self.refined, label_id=label_id)
            elif pid in self.proposals:
                self.retags[pid] = name
        self.render()  # the items are kept by id: the selection stays for Enter
        self.w.statusBar().showMessage(f"pre-label → {name}: Enter accepts it as {name}", 5000)

    def _decide(self, ids: list[int], decision: str, box=None) -> None:
        """Accept, adjust or reject proposals (and the refine answer) as one undo step whose redo() writes
        the boxes and the decisions in one transaction."""
        image_id = self._image_id()
        if image_id is None:
            return
        model_id = self.model_ids.get(image_id)
        edits: list[WorkspaceCommand] = []
        detections, names = [], []
        answer = self.refined if REFINED_ID in ids else None
        for pid in ids:
            p = self.proposals.get(pid)
            if pid == REFINED_ID or p is None:
                continue
            if decision != "rejected":
                provenance = "prelabel_adjusted" if decision == "adjusted" else "prelabel_accepted"
                cmd = self.session.add_command(box or p.box, self._label_id(p.label), provenance, model_id)
                if cmd is None:  # no image or no labels: the session has said why
                    return
                edits.append(cmd)
            detections.append((p.node, p.box))
            names.append(p.label)
        if answer is not None and decision != "rejected":
            edit = self._refine_edit(answer, box, model_id)
            if edit is None and answer.annotation_id is None:
                return
            edits += [edit] if edit is not None else []
        if not detections and answer is None:
            return
        text = self._decision_text(decision, names, answer)
        if self.session.push(_Decide(self, answer, self.session.ws, image_id, model_id, detections, decision,
                                     edits, text)):
            self.w.statusBar().showMessage(f"{text} (Ctrl+Z undoes)", 4000)

    def _refine_edit(self, ans: RefineAnswer, box, model_id: int | None) -> WorkspaceCommand | None:
        """The edit that accepting a refine answer makes: a new `refined` box with its class, or (R on a box)
        that box's new coordinates, and its new class when a number key changed it."""
        box = box or ans.box
        if ans.annotation_id is None:
            return self.session.add_command(box, ans.label_id, "refined", model_id)
        cmd = self.session.change_command({ans.annotation_id: box}, provenance="refined")
        if cmd is None:
            return None if ans.label_id is None else self.session.label_command([ans.annotation_id], ans.label_id)
        if ans.label_id is not None:
            cmd.changes = {i: (before, replace(after, label_id=ans.label_id))
                           for i, (before, after) in cmd.changes.items()}
        return cmd

    def _decision_text(self, decision: str, names: list[str], answer: RefineAnswer | None) -> str:
        """What the undo stack (and the status bar) says: "accept pre-label Car", "reject 3 pre-labels",
        "accept refined box Car (GrabCut)", "refine box Truck (model)"..."""
        verb = decision.removesuffix("ed")
        if answer is not None:
            lab = self.session.label_by_id.get(answer.label_id if answer.label_id is not None else -1)
            what = f"{lab['name'] if lab else 'no class'} ({SOURCE_WORDS.get(answer.source, answer.source)})"
            if not names:
                if decision != "rejected" and answer.annotation_id is not None:
                    return f"refine box {what}"
                return f"{verb} refined box {what}"
            return f"{verb} {len(names) + 1} pre-labels"
        if len(names) == 1:
            return f"{verb} pre-label {names[0]}"
        return f"{verb} {len(names)} pre-labels"

    # --- refine --------------------------------------------------------------------------------
    def _allowed_nodes(self) -> set[str]:
        view = self.view()
        return {n for n in view.sup.names if view.label_for(n) is not None}

    def _job(self, kind: str, arg, annotation_id: int | None):
        image_id = self._image_id()
        path = self.session.image_file(image_id)
        dets = list(self.detections.get(image_id, []))
        allowed = self._allowed_nodes()

        def job(predictor):  # runs in the worker's thread, which imports torch (refine needs it)
            from inference.refine import refine_box, refine_click
            from inference.tighten import CropModel

            image = read_image(path)
            predict = (lambda crop: predictor.predict([crop])[0]) if predictor is not None else None
            if kind == "click":
                return refine_click(image, arg, dets, predict, allowed)
            # the worker's one tight-boxes switch: a rough box the cache cannot answer is re-detected at training scale
            tight = CropModel.of(predictor) if self.worker.service.tight_boxes else None
            return refine_box(image, arg, dets, predict, allowed, tight=tight)

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
        if label_id is None:  # GrabCut knows no class: the answer shows the one Enter will give it
            label_id = self.session.current_label_id
        self.refined = RefineAnswer(tuple(value.box), label_id, float(value.score), value.source, annotation_id)
        self.render()
        self.w.canvas.select([], [REFINED_ID])
        lab = self.session.label_by_id.get(label_id if label_id is not None else -1)
        self.w.statusBar().showMessage(
            f"refined box from {SOURCE_WORDS.get(value.source, value.source)}: {lab['name'] if lab else 'no class'} "
            "(a number key changes it), Enter accepts, Delete rejects", 8000)

    def shutdown(self) -> None:
        """The window closes: the worker stops after its current step, and writes nothing more. A save of
        predictions under way commits first; a forward pass, a model loading or torch importing have nothing
        to save and are waited for only briefly, so quitting never hangs on them. Edits are the GUI
        thread's, all committed already."""
        self.worker.stop(STOP_WAIT_S)


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

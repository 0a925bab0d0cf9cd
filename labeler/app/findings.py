"""Lint on submit, the findings panel, and gold-image scoring, wired into the labeling window.

`install(window)` adds two docks (lint findings; annotator quality) and puts a check in front of the
window's submit action:

* On submit the current image is linted (`inference.lint.lint_stored_image`, with the latest model's
  stored predictions for it, calibrated on the project's submitted images, or the rules only when the
  model has not predicted it yet). No open finding: the image is
  submitted as before. Open findings: nothing is submitted; the findings dock comes up with the worst
  one selected and zoomed to, and the annotator fixes (F) or dismisses (X) each. Submitting again on the
  same image *confirms* the rest: they are marked dismissed and the image is submitted.
* A fix is an ordinary edit through the session (one undoable command): add the missed box with the
  model's label, take the suggested class, move the box to the model's, delete a duplicate, tiny or
  zero-area box, clip a box to the image. A label not in the taxonomy opens the class picker.
* After a gold image is submitted it is scored against its reference (`projects.quality`) and the
  quality dock is refreshed.

The heavy imports (torch, cleanlab) are warmed up in a background thread so the first submit is quick.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QDockWidget

from labeler.app import keymap
from projects.quality import annotator_summary, score_submission
from widgets.findings_panel import FindingRow, FindingsPanel
from widgets.quality_dock import QualityDock

if TYPE_CHECKING:
    from labeler.app.main_window import MainWindow

DELETE_KINDS = ("duplicate", "zero_area", "tiny")
CALIBRATION_IMAGES = 500  # submitted images read to calibrate the model's scores (once per session)
ZOOM_CONTEXT = 3.0  # the zoomed view shows about three times the box's size


def _row(f: dict[str, Any]) -> FindingRow:
    return FindingRow(f["id"], f["kind"], f["score"], (f["x1"], f["y1"], f["x2"], f["y2"]), f["message"],
                      f["state"], f["annotation_id"], f.get("suggested_label"))


class FindingsController(QObject):
    def __init__(self, window: MainWindow):
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
        self._calibrations: dict[tuple[str, int | None], Any] = {}
        self._submit = next(b.handler for b in keymap.BINDINGS if b.name == "submit_and_next")
        action = window.actions_by_name["submit_and_next"]
        action.triggered.disconnect()
        action.triggered.connect(self.submit)
        self.panel.zoom_requested.connect(self.zoom_to)
        self.panel.fix_requested.connect(self.fix)
        self.panel.dismiss_requested.connect(self.dismiss)
        self.quality.refresh_requested.connect(self.refresh_quality)
        self.session.image_changed.connect(self._on_image_changed)
        self.session.project_changed.connect(self.refresh_quality)
        threading.Thread(target=importlib.import_module, args=("inference.lint",), daemon=True).start()
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
        self.panel.set_banner(None)
        self._model_id = self._latest_model_id()
        self.refresh()

    def refresh(self) -> None:
        """The stored findings of the current image: of the latest model, or of a rules-only lint."""
        image_id = self._image_id()
        if image_id is None:
            self.panel.set_findings([])
            return
        rows = self.session.ws.lint_findings(image_id)
        mine = [r for r in rows if r["model_id"] == self._model_id] or [r for r in rows if r["model_id"] is None]
        self.panel.set_findings([_row(r) for r in mine])
        n = self.panel.open_count()
        self.dock.setWindowTitle(f"Lint findings ({n} open)" if n else "Lint findings")
        if self.pending == image_id and n == 0:
            self.panel.set_banner("Every finding is answered: submit again (Enter) to submit the image.")

    def refresh_quality(self) -> None:
        self.quality.set_summary(annotator_summary(self.session.ws.quality_scores(self.session.project or None)))

    # --- submit --------------------------------------------------------------------------------
    def lint_current(self) -> int:
        """Lint the current image now and show its findings; returns the number of open ones."""
        from inference.lint import lint_stored_image

        image_id = self._image_id()
        if image_id is None:
            return 0
        model_id = self._latest_model_id()
        if model_id is not None and self.session.ws.predictions(image_id, model_id) is None:
            model_id = None  # not predicted yet: the rules only
        lint_stored_image(self.session.ws, image_id, model_id, self.session.ws.project_view(self.session.project),
                          calibration=self._calibration(model_id))
        self._model_id = model_id
        self.refresh()
        return self.panel.open_count()

    def _calibration(self, model_id: int | None):
        """The model's score calibration on this project's submitted images, fitted once per session."""
        from inference.lint import project_calibration

        key = (self.session.project, model_id)
        if key not in self._calibrations:
            self._calibrations[key] = project_calibration(self.session.ws, self.session.project, model_id,
                                                          limit=CALIBRATION_IMAGES)
        return self._calibrations[key]

    def submit(self) -> None:
        """The window's submit, with the lint check in front and gold scoring after."""
        image_id = self._image_id()
        if image_id is None:
            return
        if self.pending == image_id:  # the annotator confirms what is left
            for r in self.panel.rows():
                if r.state == "open":
                    self.session.ws.set_finding_state(r.id, "dismissed")
        elif self.session.image["status"] != "submitted" and self.lint_current():
            self.pending = image_id
            n = self.panel.open_count()
            self.panel.set_banner(f"{n} open finding{'s' if n != 1 else ''} on this image: fix (F) or dismiss (X) "
                                  "each, or submit again (Enter) to confirm the image as it is.")
            self.dock.show()
            self.dock.raise_()
            self.panel.select_first_open()
            self.panel.list.setFocus()
            self.session.message.emit(f"not submitted yet: {n} lint finding{'s' if n != 1 else ''} to review")
            return
        self.pending = None
        self._submit(self.w)
        if self.session.ws.image(image_id)["status"] == "submitted":
            score = score_submission(self.session.ws, image_id)
            if score is not None:
                self.refresh_quality()
                self.session.message.emit(f"gold image scored: recall {_pct(score.recall)}, "
                                          f"precision {_pct(score.precision)}")
        self.w.canvas.setFocus()

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
        if r is not None and r.annotation_id is not None and r.annotation_id in c.annotation_boxes():
            c.select([r.annotation_id])
            self.w.annotation_list.set_selected([r.annotation_id])

    def fix(self, finding_id: int) -> None:
        r = self._finding(finding_id)
        if r is None:
            return
        s = self.session
        label_id = next((lab["id"] for lab in s.labels if lab["name"] == r.suggested_label), None)
        if r.kind == "missed" and label_id is not None:
            s.add_box(r.box, label_id, provenance="prelabel_accepted", model_id=self._model_id)
        elif r.kind == "wrong_class" and label_id is not None and r.annotation_id is not None:
            s.set_label([r.annotation_id], label_id)
        elif r.kind in ("bad_box", "out_of_image") and r.annotation_id is not None:
            s.change_boxes({r.annotation_id: r.box}, provenance="prelabel_adjusted" if r.kind == "bad_box" else None)
        elif r.kind in DELETE_KINDS and r.annotation_id is not None:
            s.delete([r.annotation_id])
        elif r.kind == "unknown_label" and r.annotation_id is not None:
            self.w.canvas.select([r.annotation_id])
            self.w.open_class_picker()
            return  # the finding is answered by the class the annotator picks; the next lint checks it
        else:
            s.message.emit(f"no automatic fix for this {r.kind} finding")
            return
        s.ws.set_finding_state(finding_id, "fixed")
        self.refresh()
        self.panel.select_first_open()

    def dismiss(self, finding_id: int) -> None:
        self.session.ws.set_finding_state(finding_id, "dismissed")
        self.refresh()
        self.panel.select_first_open()


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


def install(window: MainWindow) -> FindingsController:
    """Add the findings and quality docks to the window and the lint check to its submit action."""
    controller = FindingsController(window)
    window.findings = controller
    return controller

"""The main window: wires the widgets to the labeling session. No SQL and no gesture logic here.

Widgets show what they are given and emit signals; the session turns edits into undoable
commands and re-reads the database; this module connects the two and owns the image loader.

The window's concerns beyond drawing boxes are typed controllers that `window_runner.build_window`
sets as attributes (`findings`, `prelabels`; None when left out). They reach the window through named
seams, never by rewiring each other's actions: Enter runs `submit_pipeline` (ordered before_submit
checks that may veto, `labeler.app.submit`), Delete rejects selected proposals through `prelabels`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from labeler.app import keymap, settings, theme
from labeler.app.loader import DecodedImage, ImageLoader
from labeler.app.session import LabelingSession
from labeler.app.submit import READABLE, SubmitPipeline, Veto
from widgets.annotation_list import AnnotationList, AnnotationRow
from widgets.box_item import BoxSpec
from widgets.canvas import Canvas
from widgets.class_picker import ClassPicker
from widgets.image_list import ImageListPanel
from widgets.labels_panel import LabelsPanel, LabelSpec
from widgets.placeholder import ERROR, LOADING
from widgets.shortcut_sheet import ShortcutSheet

if TYPE_CHECKING:
    from labeler.app.findings import FindingsController
    from labeler.app.prelabels import PrelabelController
    from labeler.app.team import TeamController
    from labeler.app.trainer_panel import TrainerPanel

TOOLBAR = {"previous_image": "◀ Previous", "next_image": "Next ▶", "next_unlabeled": "Next unlabeled",
           "submit_and_next": "Submit ✓", "undo": "Undo", "redo": "Redo", "fit": "Fit", "shortcuts": "Keys (F1)"}
PREFETCH_DELAY_MS = 40
FIRST_RUN_HINT = "Drag: draw a box · click a dashed pre-label + Enter: accept it · Shift+Enter: accept all · F1: keys"
STATUS_WORDS = {"unlabeled": "unlabeled", "in_progress": "in progress", "submitted": "submitted"}


def _group(title: str, widget: QWidget) -> QGroupBox:
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    layout.setContentsMargins(4, 4, 4, 4)
    layout.addWidget(widget)
    return box


class MainWindow(QMainWindow):
    image_ready = Signal(int)  # the current image is on the canvas: its pixels, or a placeholder saying why not
    workspace_requested = Signal(str)  # the user chose another workspace folder (Ctrl+O)
    findings: FindingsController | None = None  # lint on submit and the findings dock
    prelabels: PrelabelController | None = None  # the model's proposals and refine
    trainer: TrainerPanel | None = None  # the model in use, its figures, and the follow trainer's start/stop
    team: TeamController | None = None  # a team workspace with --user: leases renewed and given back, progress

    def __init__(self, session: LabelingSession, loader: ImageLoader | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.loader = loader or ImageLoader(parent=self)
        self.canvas = Canvas()
        self.image_list = ImageListPanel()
        self.labels_panel = LabelsPanel()
        self.annotation_list = AnnotationList()
        self.project_box = QComboBox()
        self.project_box.setToolTip("Project: the customer taxonomy you are labeling in")
        self.project_box.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.ready_image_id: int | None = None
        self.last_error: str | None = None
        self._prefetch_timer = QTimer(self)
        self._prefetch_timer.setSingleShot(True)
        self._prefetch_timer.setInterval(PREFETCH_DELAY_MS)
        self._prefetch_timer.timeout.connect(self._prefetch)
        self._dialogs: list[QWidget] = []
        self.new_image_zoom = settings.new_image_zoom()  # "fit" (default) or "keep"
        self._hint_watched: list[QObject] = []  # undo stacks whose first edit hides the first-run hint
        self.unreadable: dict[int, str] = {}  # image id -> why its pixels could not be read (this session)
        self.submit_pipeline = SubmitPipeline(lambda: self.session.image, self.session.submit_and_next,
                                              lambda image_id: self.session.ws.image(image_id)["status"])
        self.submit_pipeline.before_submit("image readable", READABLE, self._check_readable)
        self._build()
        self.actions_by_name = keymap.install(self)
        self._build_toolbar()
        self._connect()
        self._on_project_changed()
        self._on_queue_changed()
        self._on_image_changed()
        self._on_annotations_changed()
        self._on_counts_changed()
        if not settings.hint_seen():
            self.canvas.set_hint(FIRST_RUN_HINT)  # until the first edit, then never again
            self._watch_first_edit()
        self.canvas.setFocus()

    # --- layout ------------------------------------------------------------------------------
    def _build(self) -> None:
        self.labels_group = _group("Labels", self.labels_panel)
        self.boxes_group = _group("Boxes on this image", self.annotation_list)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.labels_group)
        right.addWidget(self.boxes_group)
        right.setSizes([260, 420])
        self.images_group = _group("Images", self.image_list)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.images_group)
        split.addWidget(self.canvas)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        # the boxes list needs room for its columns in full; it takes it from the image list, not the canvas
        right_w = max(290, right.minimumSizeHint().width())
        split.setSizes([max(180, 250 - (right_w - 290)), 880, right_w])
        self.setCentralWidget(split)
        self.status_position = QLabel()
        self.status_counts = QLabel()
        self.status_cursor = QLabel()
        self.status_zoom = QLabel()
        for w in (self.status_position, self.status_counts, self.status_cursor, self.status_zoom):
            self.statusBar().addPermanentWidget(w)
        self.resize(1440, 880)

    def _build_toolbar(self) -> None:
        bar = QToolBar("Main")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        bar.addWidget(QLabel(" Project "))
        bar.addWidget(self.project_box)
        bar.addSeparator()
        for name, text in TOOLBAR.items():
            action = self.actions_by_name[name]
            action.setIconText(text)
            keys = " / ".join(s.toString() for s in action.shortcuts())
            action.setToolTip(f"{action.text()} ({keys})")
            bar.addAction(action)
            if name in ("submit_and_next", "redo"):
                bar.addSeparator()
        self.addToolBar(bar)

    def _connect(self) -> None:
        s = self.session
        s.project_changed.connect(self._on_project_changed)
        self.canvas.draw_mode_changed.connect(self._on_draw_mode)
        s.queue_changed.connect(self._on_queue_changed)
        s.image_changed.connect(self._on_image_changed)
        s.annotations_changed.connect(self._on_annotations_changed)
        s.image_status_changed.connect(self.image_list.model.update_status)
        s.counts_changed.connect(self._on_counts_changed)
        s.current_label_changed.connect(self._on_current_label)
        s.message.connect(lambda text: self.statusBar().showMessage(text, 5000))
        s.failed.connect(self._on_edit_failed)
        c = self.canvas
        c.box_drawn.connect(self._on_box_drawn)
        c.boxes_changed.connect(lambda boxes: s.change_boxes(boxes))
        c.boxes_nudged.connect(lambda boxes: s.change_boxes(boxes, nudge=True))
        c.selection_changed.connect(self.annotation_list.set_selected)
        c.cursor_moved.connect(lambda x, y: self.status_cursor.setText(f"x {x:.0f}  y {y:.0f}"))
        c.zoom_changed.connect(lambda z: self.status_zoom.setText(f"{z * 100:.0f} %"))
        c.draw_refused.connect(self._on_draw_refused)
        self.annotation_list.selection_changed.connect(lambda ids: c.select(ids))
        self.labels_panel.label_activated.connect(self.apply_label)
        self.image_list.row_activated.connect(self._on_row_activated)
        self.image_list.filter_changed.connect(s.set_filter)
        self.project_box.activated.connect(lambda i: s.open_project(self.project_box.itemText(i)))
        self.loader.loaded.connect(self._on_loaded)
        self.loader.failed.connect(self._on_failed)

    # --- session → widgets -------------------------------------------------------------------
    def _on_project_changed(self) -> None:
        s = self.session
        self.project_box.blockSignals(True)
        self.project_box.clear()
        self.project_box.addItems(s.ws.project_names())
        self.project_box.setCurrentText(s.project)
        self.project_box.blockSignals(False)
        self.labels_panel.set_labels([LabelSpec(lab["id"], lab["name"], lab["color"] or "#e6194b", lab["shortcut"],
                                                lab["node"]) for lab in s.labels])
        self.labels_panel.set_current(s.current_label_id)
        self.labels_group.setTitle(f"Labels of project {s.project}")
        self.setWindowTitle(f"Labeler — {s.ws.name} — project {s.project}")
        self._watch_first_edit()

    def _on_queue_changed(self) -> None:
        self.image_list.model.set_source(len(self.session.queue), self.session.page)
        self.image_list.set_filter(self.session.status_filter)

    def _on_image_changed(self) -> None:
        s, img = self.session, self.session.image
        self.canvas.cancel_gesture()  # a drag begun on the previous image must not land on this one
        self.canvas.set_proposals([])
        if self.new_image_zoom == "fit":
            self.canvas.open_fitted()  # not at the last image's zoom (a lint close-up, a wheel zoom)
        self.ready_image_id = None
        if img is None:
            message = ("No image has this status." if s.status_filter else
                       "No image of this project is left to claim: every one is submitted or held by another "
                       "annotator." if s.user is not None else
                       "This project has no images yet: add some with `labeler images add`.")
            self.canvas.set_placeholder(640, 400, message, ERROR)
            self._update_position()
            return
        self.image_list.set_current_row(s.index)
        path = str(s.ws.image_path(img["path"]))
        decoded = self.loader.request((img["id"], path))
        self._prefetch_timer.start()  # neighbours after this image is painted: both cores go to the switch first
        if decoded is not None:
            self._show(decoded)
        else:
            self.canvas.set_placeholder(img["width"], img["height"], Path(path).name, LOADING)
        self._update_position()

    def _prefetch(self) -> None:
        img = self.session.image
        if img is not None:
            self.loader.request((img["id"], str(self.session.ws.image_path(img["path"]))), self.session.neighbours())

    def _on_annotations_changed(self) -> None:
        s = self.session
        specs, rows = [], []
        for a in s.annotations:
            lab = s.label_by_id.get(a["label_id"], {})
            color = lab.get("color") or "#e6194b"
            box = (a["x1"], a["y1"], a["x2"], a["y2"])
            specs.append(BoxSpec(a["id"], a["label"], color, box))
            rows.append(AnnotationRow(a["id"], a["label"], box, a["provenance"], color, a["label_id"]))
        self.canvas.set_annotations(specs)
        self.annotation_list.set_annotations(rows)
        self.annotation_list.set_selected(self.canvas.selected_ids())
        self.boxes_group.setTitle(f"Boxes on this image ({len(rows)})")
        self.labels_panel.set_counts(dict(Counter(a["label_id"] for a in s.annotations)))

    def _on_counts_changed(self) -> None:
        c = self.session.counts
        total = sum(c.values())
        self.status_counts.setText(f"  Project {self.session.project}: {c.get('submitted', 0)} / {total} submitted · "
                                   f"{c.get('in_progress', 0)} in progress · {c.get('unlabeled', 0)} unlabeled  ")
        self._update_position()

    def _on_current_label(self, label_id: int) -> None:
        self.labels_panel.set_current(label_id)
        self.statusBar().showMessage(f"class: {self.session.label_by_id[label_id]['name']}", 3000)

    def _update_position(self) -> None:
        s = self.session
        if s.image is None:
            self.status_position.setText("No image")
            return
        where = f"Image {s.index + 1} / {len(s.queue)}"
        if s.status_filter:
            where += f" of the {STATUS_WORDS[s.status_filter]} ones"
        self.status_position.setText(f"{where} ({STATUS_WORDS.get(s.image['status'], s.image['status'])})")

    def _on_edit_failed(self, message: str) -> None:
        """An edit did not reach the database; the canvas already shows what is stored instead."""
        self.statusBar().showMessage(message, 30000)
        box = QMessageBox(QMessageBox.Icon.Warning, "Edit not saved", message, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        box.open()  # window-modal, does not block the event loop
        self.last_error = message

    # --- loader → canvas ---------------------------------------------------------------------
    def _current_id(self) -> int | None:
        return self.session.image["id"] if self.session.image else None

    def _show(self, decoded: DecodedImage) -> None:
        self.unreadable.pop(decoded.image_id, None)  # the file was replaced with a good one
        self.canvas.set_image(decoded.levels)
        self.ready_image_id = decoded.image_id
        self.image_ready.emit(decoded.image_id)

    def _on_draw_refused(self, kind: str, message: str) -> None:
        """A drag or Alt+click on a placeholder: say why nothing is drawn."""
        img = self.session.image
        name = Path(img["path"]).name if img else "this image"
        if kind == LOADING:
            text = f"{name} is still loading: boxes can be drawn once it is shown"
        else:
            text = f"cannot draw on {name}: {message}. Its boxes can be selected and deleted, not drawn or moved"
        self.statusBar().showMessage(text, 8000)

    def _on_loaded(self, image_id: int, decoded: DecodedImage) -> None:
        if image_id == self._current_id():
            self._show(decoded)

    def _on_failed(self, image_id: int, message: str) -> None:
        if image_id != self._current_id():
            return
        img = self.session.image
        self.unreadable[image_id] = message
        self.canvas.set_placeholder(img["width"], img["height"], message, ERROR)
        self.statusBar().showMessage(message, 10000)
        self.ready_image_id = image_id
        self.image_ready.emit(image_id)

    def _on_box_drawn(self, box) -> None:
        """Commit the new box and select it, so a number key or an arrow acts on it straight away."""
        annotation_id = self.session.add_box(box)
        if annotation_id is not None:
            self.canvas.select([annotation_id])
            self.annotation_list.set_selected([annotation_id])

    # --- actions the key table calls ---------------------------------------------------------
    def submit(self) -> Veto | None:
        """Enter: run the submit pipeline; a veto's reason goes to the status bar."""
        veto = self.submit_pipeline.submit()
        if veto is not None and veto.reason:
            self.statusBar().showMessage(veto.reason, 10000)
        return veto

    def _check_readable(self, image: dict) -> Veto | None:
        """An image whose pixels could not be read is never submitted as labelled: nobody has seen it."""
        why = self.unreadable.get(image["id"])
        if why is None:
            return None
        return Veto(f"{Path(image['path']).name} is not submitted: {why}. Nobody can check its boxes; "
                    "replace the file (it is read again when shown) or skip the image (D)")

    def delete_selected(self) -> None:
        """Delete: reject the selected proposals when there are any, else delete the selected boxes."""
        proposals = self.canvas.selected_proposal_ids()
        if proposals and self.prelabels is not None:
            self.prelabels.reject(proposals)  # says what it rejected
            return
        ids = self.canvas.selected_ids()
        if not ids:  # a stale "undo: …" must not read as what Delete did
            self.statusBar().showMessage("nothing selected to delete: click a box or a pre-label first", 4000)
            return
        error = self.last_error
        self.session.delete(ids)
        if self.last_error is error:  # written (a failure has said so itself)
            self.statusBar().showMessage(f"deleted {len(ids)} box{'es' if len(ids) != 1 else ''} (Ctrl+Z undoes)", 4000)

    def arm_draw(self) -> None:
        """W: the next drag draws a box, even where it starts on a box or a pre-label (as in labelImg)."""
        self.canvas.arm_draw(True)

    def _on_draw_mode(self, on: bool) -> None:
        if on:
            name = self.session.label_by_id.get(self.session.current_label_id or -1, {}).get("name", "no class")
            self.statusBar().showMessage(f"draw: drag a box anywhere, class {name} (Esc cancels)", 8000)

    def say_saved(self) -> None:
        """Ctrl+S: there is nothing to save; say so, and how much is stored."""
        n = sum(stack.index() for stack in self.session.stacks.values())
        self.statusBar().showMessage(
            "Everything is saved: each edit is written to the workspace the moment it is made "
            f"({n} edit{'s' if n != 1 else ''} this session, every one of them stored)", 6000)

    def toggle_boxes(self) -> None:
        """Ctrl+H: hide or show the boxes and pre-labels, to look at the image alone."""
        shown = not self.canvas.boxes_shown()
        self.canvas.set_boxes_shown(shown)
        self.statusBar().showMessage("boxes and pre-labels shown" if shown else
                                     "boxes and pre-labels hidden (Ctrl+H shows them)", 4000)

    def cycle_theme(self) -> str:
        """Ctrl+Shift+T: system → dark → light → system (remembered)."""
        t = theme.for_app()
        mode = t.next_mode()
        scheme = t.apply(mode)
        settings.set_preference("theme", mode)
        self.statusBar().showMessage(f"theme: {mode}" + (f" (now {scheme})" if mode == "system" else ""), 4000)
        return mode

    def _watch_first_edit(self) -> None:
        """While the hint shows, the first edit on the current project's undo stack hides it."""
        stack = self.session.undo_stack
        if self.canvas.hint() and stack not in self._hint_watched:
            self._hint_watched.append(stack)
            stack.indexChanged.connect(self._on_first_edit)

    def _on_first_edit(self) -> None:
        """The first edit of the first run: the hint has done its job."""
        if self.canvas.hint():
            self.canvas.set_hint("")
            settings.set_preference("hint_seen", "yes")

    def toggle_new_image_zoom(self) -> None:
        """New images open fitted, or at the zoom of the image before (remembered for the next sessions)."""
        self.new_image_zoom = "keep" if self.new_image_zoom == "fit" else "fit"
        settings.set_preference("new_image_zoom", self.new_image_zoom)
        self.statusBar().showMessage("new images open fitted to the window" if self.new_image_zoom == "fit" else
                                     "new images keep the current zoom", 5000)

    def use_shortcut(self, key: str) -> None:
        lab = self.session.label_for_shortcut(key)
        if lab is None:
            self.statusBar().showMessage(f"no label of project {self.session.project} has the key {key}", 4000)
            return
        self.apply_label(lab["id"])

    def apply_label(self, label_id: int) -> None:
        """Make this the current class, and give it to the selected boxes (and selected pre-labels, which Enter
        then accepts with it)."""
        self.session.set_current_label(label_id)
        selected = self.canvas.selected_ids()
        if selected:
            self.session.set_label(selected, label_id)
        proposals = self.canvas.selected_proposal_ids()
        if proposals and self.prelabels is not None:
            self.prelabels.retag(proposals, label_id)

    def open_class_picker(self) -> ClassPicker:
        picker = ClassPicker(self.labels_panel.labels(), self)
        picker.picked.connect(self.apply_label)
        self._keep(picker)
        picker.show()
        picker.raise_()
        picker.activateWindow()  # its keys (Enter) must not reach the window's own shortcuts
        picker.search.setFocus()
        return picker

    def show_shortcut_sheet(self) -> ShortcutSheet:
        sheet = ShortcutSheet(keymap.sheet_rows(), self)
        self._keep(sheet)
        sheet.show()
        sheet.raise_()
        sheet.activateWindow()
        return sheet

    def choose_workspace(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a workspace folder", str(self.session.ws.folder.parent))
        if folder:
            self.workspace_requested.emit(folder)

    def _keep(self, dialog: QWidget) -> None:
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        dialog.destroyed.connect(lambda *_: self._dialogs.remove(dialog) if dialog in self._dialogs else None)
        self._dialogs.append(dialog)

    def _on_row_activated(self, row: int) -> None:
        self.session.go_to(row)
        self.canvas.setFocus()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Nothing to save (every edit is committed); just stop decoding."""
        self._prefetch_timer.stop()
        self.loader.clear()
        self.loader.wait(5000)
        super().closeEvent(event)

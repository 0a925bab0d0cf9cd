"""The lint findings of the current image: what the model thinks may be wrong, worst first.

Shows what it is given and emits signals; the app decides what "fix" means for each kind (add the missed
box, take the suggested class, move the box to the model's, delete a duplicate) and stores the answer.
Selecting a finding (click or arrow keys) asks to zoom to its box. `set_banner` shows a line above the
list (the submit review).

Keys: fixing and dismissing have keys of their own in the window's key table (Shift+F, X), which work
wherever the focus is; no letter key means one thing here and another on the canvas, so F always fits.
Focus rules, only while the list has focus: the arrow keys, Home/End and PgUp/PgDn move between
findings (they never nudge the selected box underneath), Delete/Backspace dismiss the selected finding,
and Esc hands the focus back to the canvas (`leave_requested`).
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from projects.values import Box
from widgets.labels_panel import swatch

KIND_TEXT = {"missed": "Missed object", "wrong_class": "Wrong class", "bad_box": "Loose / off box",
             "duplicate": "Duplicate", "zero_area": "Zero area", "out_of_image": "Outside the image",
             "tiny": "Tiny box", "unknown_label": "Label not in taxonomy"}
KIND_COLOR = {"missed": "#e6194b", "wrong_class": "#f58231", "bad_box": "#ffe119", "duplicate": "#911eb4"}
RULE_COLOR = "#808080"
DISMISS_KEYS = (Qt.Key.Key_Delete, Qt.Key.Key_Backspace)  # while the list has focus; X works everywhere
LIST_KEYS = (Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_Home, Qt.Key.Key_End, Qt.Key.Key_PageUp,
             Qt.Key.Key_PageDown)  # the list's own navigation, claimed from the window's nudge/image keys


def kind_color(kind: str) -> str:
    """The colour a finding kind is shown in (list swatch, canvas frame)."""
    return KIND_COLOR.get(kind, RULE_COLOR)


def kind_text(kind: str) -> str:
    return KIND_TEXT.get(kind, kind)


@dataclass(frozen=True)
class FindingRow:
    id: int
    kind: str
    score: float
    box: Box
    message: str
    state: str = "open"  # open, dismissed, fixed
    annotation_id: int | None = None
    suggested_label: str | None = None


class FindingsPanel(QWidget):
    zoom_requested = Signal(int, object)  # finding id, box (x1, y1, x2, y2) in image pixels
    fix_requested = Signal(int)  # finding id
    dismiss_requested = Signal(int)  # finding id
    leave_requested = Signal()  # Esc in the list: the focus goes back to the canvas

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("QLabel { background: #fff3cd; color: #5c4400; padding: 4px; }")
        self.banner.hide()
        self.list = QListWidget()
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setWordWrap(True)
        self.list.currentItemChanged.connect(self._on_current)
        self.list.itemClicked.connect(self._on_clicked)
        self.list.installEventFilter(self)
        self.fix_button = QPushButton("Fix (Shift+F)")
        self.dismiss_button = QPushButton("Dismiss (X)")
        self.fix_button.setToolTip("Apply the model's suggestion to this finding")
        self.dismiss_button.setToolTip("The annotation is right: do not raise this finding again")
        for b in (self.fix_button, self.dismiss_button):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.fix_button.clicked.connect(self.fix_current)
        self.dismiss_button.clicked.connect(self.dismiss_current)
        self.summary = QLabel("No findings")
        buttons = QHBoxLayout()
        buttons.addWidget(self.fix_button)
        buttons.addWidget(self.dismiss_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.banner)
        layout.addWidget(self.summary)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        self._rows: list[FindingRow] = []
        self._update_buttons()

    # --- content -----------------------------------------------------------------------------
    def set_findings(self, rows: list[FindingRow]) -> None:
        """Show these findings (open ones first, then by score); keeps the selection when it is still there."""
        keep = self.current_id()
        self._rows = sorted(rows, key=lambda r: (r.state != "open", -r.score, r.id))
        self.list.blockSignals(True)
        try:
            self.list.clear()
            for r in self._rows:
                item = QListWidgetItem(swatch(kind_color(r.kind)), f"{kind_text(r.kind)} · {r.score:.2f}\n{r.message}")
                item.setData(Qt.ItemDataRole.UserRole, r.id)
                item.setToolTip(f"finding {r.id} ({r.state}): {r.message}")
                if r.state != "open":
                    item.setForeground(QColor("#888888"))
                    item.setText(item.text() + f"  [{r.state}]")
                self.list.addItem(item)
                if r.id == keep:
                    self.list.setCurrentItem(item)
        finally:
            self.list.blockSignals(False)
        n_open = sum(r.state == "open" for r in self._rows)
        self.summary.setText("No findings" if not self._rows else
                             f"{n_open} open finding{'s' if n_open != 1 else ''}"
                             + (f", {len(self._rows) - n_open} answered" if len(self._rows) > n_open else ""))
        self._update_buttons()

    def rows(self) -> list[FindingRow]:
        return list(self._rows)

    def open_count(self) -> int:
        return sum(r.state == "open" for r in self._rows)

    def set_banner(self, text: str | None) -> None:
        self.banner.setText(text or "")
        self.banner.setVisible(bool(text))

    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole))

    def current_row(self) -> FindingRow | None:
        fid = self.current_id()
        return next((r for r in self._rows if r.id == fid), None)

    def select_first_open(self) -> None:
        for i, r in enumerate(self._rows):
            if r.state == "open":
                self.list.setCurrentRow(i)
                return

    # --- actions -----------------------------------------------------------------------------
    def fix_current(self) -> None:
        r = self.current_row()
        if r is not None and r.state == "open":
            self.fix_requested.emit(r.id)

    def dismiss_current(self) -> None:
        r = self.current_row()
        if r is not None and r.state == "open":
            self.dismiss_requested.emit(r.id)

    def _on_current(self, current: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        self._update_buttons()
        if current is not None:
            r = self.current_row()
            if r is not None:
                self.zoom_requested.emit(r.id, r.box)

    def _on_clicked(self, item: QListWidgetItem) -> None:
        r = self.current_row()
        if r is not None and item is self.list.currentItem():
            self.zoom_requested.emit(r.id, r.box)  # a click on the selected row zooms again

    def _update_buttons(self) -> None:
        r = self.current_row()
        usable = r is not None and r.state == "open"
        self.fix_button.setEnabled(usable)
        self.dismiss_button.setEnabled(usable)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        """With the list focused: Delete dismisses, Esc leaves, navigation keys stay in the list. Nothing
        else is claimed, so every other key (F = fit) does what the window's key table says."""
        if obj is self.list and event.type() in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress):
            key = event.key()
            plain = not event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
            if plain and (key in DISMISS_KEYS or key in LIST_KEYS or key == Qt.Key.Key_Escape):
                if event.type() == QEvent.Type.ShortcutOverride:
                    event.accept()  # the list gets the key press, not the window's shortcut
                    return True
                if key in DISMISS_KEYS:
                    self.dismiss_current()
                    return True
                if key == Qt.Key.Key_Escape:
                    self.leave_requested.emit()
                    return True
        return super().eventFilter(obj, event)

"""The project's labels with their colours, 1–9 shortcuts and box counts on the current image; the
current class is highlighted.

Clicking a label makes it the current class (and, when boxes are selected, the app gives them
that class): the same as pressing its number key.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListWidget, QListWidgetItem, QWidget


@dataclass(frozen=True)
class LabelSpec:
    id: int
    name: str
    color: str
    shortcut: str | None
    node: str  # the super-taxonomy node the label maps to (shown so annotators see what it means)


@lru_cache(maxsize=256)
def swatch(color: str, size: int = 14) -> QIcon:
    """A square of the label's colour (cached: the lists ask for the same few colours all day)."""
    pm = QPixmap(size, size)
    pm.fill(QColor(color))
    return QIcon(pm)


class LabelsPanel(QListWidget):
    label_activated = Signal(int)  # label id

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setIconSize(QSize(14, 14))
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keys belong to the canvas and the key table
        self.itemClicked.connect(lambda item: self.label_activated.emit(item.data(Qt.ItemDataRole.UserRole)))
        self._labels: list[LabelSpec] = []
        self._counts: dict[int, int] = {}

    def set_labels(self, labels: list[LabelSpec]) -> None:
        self._labels = list(labels)
        self._counts = {}
        self.clear()
        for lab in labels:
            item = QListWidgetItem(swatch(lab.color), self._text(lab))
            item.setToolTip(f"{lab.name} → super-taxonomy node '{lab.node}'"
                            + (f"; press {lab.shortcut}" if lab.shortcut else ""))
            item.setData(Qt.ItemDataRole.UserRole, lab.id)
            self.addItem(item)

    def _text(self, lab: LabelSpec) -> str:
        key = f"[{lab.shortcut}]" if lab.shortcut else "[ ]"
        n = self._counts.get(lab.id, 0)
        return f"{key}  {lab.name}" + (f"  ({n})" if n else "")

    def set_counts(self, counts: dict[int, int]) -> None:
        """How many boxes of each label the current image has, shown after the label's name (as the label
        lists of labelme and X-AnyLabeling do); only changed rows are touched."""
        if counts == self._counts:
            return
        self._counts = dict(counts)
        for i, lab in enumerate(self._labels):
            item = self.item(i)
            text = self._text(lab)
            if item is not None and item.text() != text:
                item.setText(text)

    def count_of(self, label_id: int) -> int:
        return self._counts.get(label_id, 0)

    def labels(self) -> list[LabelSpec]:
        return list(self._labels)

    def set_current(self, label_id: int | None) -> None:
        for i in range(self.count()):
            item = self.item(i)
            current = item.data(Qt.ItemDataRole.UserRole) == label_id
            font = QFont(item.font())
            font.setBold(current)
            item.setFont(font)
            item.setSelected(current)

    def current_label_id(self) -> int | None:
        items = self.selectedItems()
        return items[0].data(Qt.ItemDataRole.UserRole) if items else None

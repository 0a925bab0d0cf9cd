"""The current image's annotations: label, size and provenance, selection kept in step with the canvas."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QTreeWidget, QTreeWidgetItem, QWidget

from projects.values import AnnotationRow
from widgets.labels_panel import swatch

__all__ = ["AnnotationList", "AnnotationRow"]

LABEL_ROOM = "Pedestrian_child"  # the label column fits a name this long
PROVENANCE_WORDS = ("manual", "prelabel_accepted", "prelabel_adjusted", "refined", "imported")  # shown in full


class AnnotationList(QTreeWidget):
    selection_changed = Signal(object)  # list[int] of annotation ids the user selected here

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setColumnCount(3)
        self.setHeaderLabels(["Label", "Size", "Provenance"])
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.header().setStretchLastSection(True)
        self._fit_columns()
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.itemSelectionChanged.connect(self._emit_selection)
        self._quiet = False
        self._items: dict[int, QTreeWidgetItem] = {}
        self._shown: dict[int, AnnotationRow] = {}

    def _fit_columns(self) -> None:
        """Fixed widths, measured once (measuring the columns on every switch cost more than the rest of the
        list): a typical long label, a four-digit size, and the widest provenance word in full, which the
        list's minimum width keeps visible (a longer label is cut; its tooltip has it whole)."""
        fm = self.fontMetrics()
        pad = 2 * self.style().pixelMetric(self.style().PixelMetric.PM_FocusFrameHMargin) + 8
        icon = self.iconSize().width() if self.iconSize().width() > 0 else \
            self.style().pixelMetric(self.style().PixelMetric.PM_SmallIconSize)
        label = fm.horizontalAdvance(LABEL_ROOM) + icon + 12 + pad
        size = fm.horizontalAdvance("0000 × 0000") + pad
        provenance = max(fm.horizontalAdvance(p) for p in PROVENANCE_WORDS) + pad
        self.setColumnWidth(0, label)
        self.setColumnWidth(1, size)
        self.setMinimumWidth(label + size + provenance + 2 * self.frameWidth())

    def set_annotations(self, rows: list[AnnotationRow]) -> None:
        """Show these rows. Items are kept by id and only changed cells are touched: an edit re-sends
        every row of the image, and rebuilding the list each time would cost more than the edit."""
        self._quiet = True
        try:
            wanted = {r.id for r in rows}
            if not wanted & self._items.keys():  # another image: start afresh, faster than removing one by one
                self.clear()
                self._items.clear()
                self._shown.clear()
            for i in reversed(range(self.topLevelItemCount())):
                item = self.topLevelItem(i)
                if item.data(0, Qt.ItemDataRole.UserRole) not in wanted:
                    self.takeTopLevelItem(i)
                    self._items.pop(item.data(0, Qt.ItemDataRole.UserRole), None)
                    self._shown.pop(item.data(0, Qt.ItemDataRole.UserRole), None)
            for r in rows:
                item = self._items.get(r.id)
                if item is None:
                    item = QTreeWidgetItem()
                    item.setData(0, Qt.ItemDataRole.UserRole, r.id)
                    self._items[r.id] = item
                    self.addTopLevelItem(item)
                self._fill(item, r)
        finally:
            self._quiet = False

    def _fill(self, item: QTreeWidgetItem, r: AnnotationRow) -> None:
        if self._shown.get(r.id) == r:
            return
        self._shown[r.id] = r
        w, h = r.box[2] - r.box[0], r.box[3] - r.box[1]
        for col, text in enumerate((r.label, f"{w:.0f} × {h:.0f}", r.provenance)):
            item.setText(col, text)
        item.setIcon(0, swatch(r.color))
        item.setToolTip(0, f"annotation {r.id}: x1 {r.box[0]:.1f}, y1 {r.box[1]:.1f}, "
                           f"x2 {r.box[2]:.1f}, y2 {r.box[3]:.1f}")

    def ids(self) -> list[int]:
        return [self.topLevelItem(i).data(0, Qt.ItemDataRole.UserRole) for i in range(self.topLevelItemCount())]

    def selected_ids(self) -> list[int]:
        return sorted(item.data(0, Qt.ItemDataRole.UserRole) for item in self.selectedItems())

    def set_selected(self, ids: list[int]) -> None:
        """Mirror the canvas selection without echoing it back."""
        self._quiet = True
        try:
            wanted = set(ids)
            for aid, item in self._items.items():
                if item.isSelected() != (aid in wanted):
                    item.setSelected(aid in wanted)
        finally:
            self._quiet = False

    def _emit_selection(self) -> None:
        if not self._quiet:
            self.selection_changed.emit(self.selected_ids())

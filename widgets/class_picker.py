"""A searchable class picker: type part of a label's name, Enter picks the first match.

For projects with more labels than number keys, and for annotators who prefer names to numbers.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QDialog, QLineEdit, QListView, QVBoxLayout, QWidget

from widgets.labels_panel import LabelSpec, swatch


class ClassPicker(QDialog):
    picked = Signal(int)  # label id

    def __init__(self, labels: list[LabelSpec], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Pick a class")
        self.setModal(False)
        self.source = QStandardItemModel(self)
        for lab in labels:
            text = f"{lab.name}   ({lab.node}" + (f", key {lab.shortcut})" if lab.shortcut else ")")
            item = QStandardItem(swatch(lab.color), text)
            item.setData(lab.id, Qt.ItemDataRole.UserRole)
            item.setData(f"{lab.name} {lab.node}", Qt.ItemDataRole.UserRole + 1)
            item.setEditable(False)
            self.source.appendRow(item)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.source)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.proxy.setFilterRole(Qt.ItemDataRole.UserRole + 1)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Type to search labels…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._filter)
        self.search.installEventFilter(self)
        self.list = QListView()
        self.list.setModel(self.proxy)
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.list.activated.connect(self._pick_index)
        self.list.clicked.connect(self._pick_index)
        layout = QVBoxLayout(self)
        layout.addWidget(self.search)
        layout.addWidget(self.list)
        self.resize(320, 300)
        self._filter("")

    def _filter(self, text: str) -> None:
        self.proxy.setFilterFixedString(text.strip())
        if self.proxy.rowCount():
            self.list.setCurrentIndex(self.proxy.index(0, 0))

    def visible_names(self) -> list[str]:
        return [self.proxy.index(r, 0).data().split("   ")[0] for r in range(self.proxy.rowCount())]

    def _pick_index(self, index) -> None:
        if index.isValid():
            self.picked.emit(index.data(Qt.ItemDataRole.UserRole))
            self.accept()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        """Up/Down move through the matches and Enter picks, while the cursor stays in the search box."""
        if obj is self.search and event.type() == QEvent.Type.KeyPress:
            key = event.key()
            if key in (Qt.Key.Key_Up, Qt.Key.Key_Down):
                row = self.list.currentIndex().row() + (1 if key == Qt.Key.Key_Down else -1)
                if 0 <= row < self.proxy.rowCount():
                    self.list.setCurrentIndex(self.proxy.index(row, 0))
                return True
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self._pick_index(self.list.currentIndex())
                return True
        return super().eventFilter(obj, event)

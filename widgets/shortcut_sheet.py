"""The shortcut sheet (F1): every key and mouse binding, rendered from the app's one binding table."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QAbstractItemView, QDialog, QHeaderView, QTableWidget, QTableWidgetItem, QVBoxLayout


@dataclass(frozen=True)
class SheetRow:
    group: str
    keys: str
    description: str


class ShortcutSheet(QDialog):
    def __init__(self, rows: list[SheetRow], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard and mouse")
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Keys", "Does"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        bold = QFont()
        bold.setBold(True)
        group = None
        for r in rows:
            if r.group != group:
                group = r.group
                self._add(group, "", bold, header=True)
            self._add(r.keys, r.description)
        self.table.resizeRowsToContents()
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        self.resize(720, 760)

    def _add(self, keys: str, text: str, font: QFont | None = None, header: bool = False) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        a, b = QTableWidgetItem(keys), QTableWidgetItem(text)
        if font is not None:
            a.setFont(font)
        if header:
            self.table.setSpan(row, 0, 1, 2)
            a.setTextAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.table.setItem(row, 0, a)
        self.table.setItem(row, 1, b)

    def rows_text(self) -> list[tuple[str, str]]:
        """The table as (keys, description) pairs, group headers included."""
        out = []
        for r in range(self.table.rowCount()):
            b = self.table.item(r, 1)
            out.append((self.table.item(r, 0).text(), b.text() if b else ""))
        return out

"""Each annotator's scores on gold images, with their trend over time.

A dock holding a table: annotator, gold images, precision, recall, mean IoU (over all their gold images)
and a sparkline of recall and precision per submitted gold image, oldest left. It shows what it is given
(`projects.quality.annotator_summary` rows, as plain dicts) and reads nothing itself; `refresh_requested`
asks the app for fresh rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QPointF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPen, QPolygonF
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDockWidget,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

COLUMNS = ("Annotator", "Gold", "Precision", "Recall", "Mean IoU", "Trend")
RECALL_COLOR, PRECISION_COLOR = "#4363d8", "#f58231"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


class Sparkline(QWidget):
    """Recall (blue) and precision (orange) per gold image, 0–1 on the vertical axis; gaps where undefined."""

    def __init__(self, history: Sequence[dict[str, Any]], parent: QWidget | None = None):
        super().__init__(parent)
        self.series = {RECALL_COLOR: [h.get("recall") for h in history],
                       PRECISION_COLOR: [h.get("precision") for h in history]}
        self.setMinimumSize(120, 28)
        self.setToolTip("\n".join(f"{h.get('created_at', '')[:16]}  {h.get('path', '')}: precision "
                                  f"{_pct(h.get('precision'))}, recall {_pct(h.get('recall'))}" for h in history))

    def sizeHint(self) -> QSize:
        return QSize(160, 28)

    def points(self, values: Sequence[float | None]) -> list[QPointF | None]:
        """Widget coordinates of each value (None stays None): the x axis spreads the images evenly."""
        w, h, m = self.width(), self.height(), 3.0
        n = len(values)
        out: list[QPointF | None] = []
        for i, v in enumerate(values):
            x = m + (w - 2 * m) * (i / (n - 1) if n > 1 else 0.5)
            out.append(None if v is None else QPointF(x, h - m - (h - 2 * m) * float(v)))
        return out

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(QPen(QColor("#dddddd"), 1))
        p.drawLine(0, self.height() // 2, self.width(), self.height() // 2)
        for color, values in self.series.items():
            p.setPen(QPen(QColor(color), 1.6))
            run: list[QPointF] = []
            for pt in [*self.points(values), None]:
                if pt is not None:
                    run.append(pt)
                    continue
                if len(run) > 1:
                    p.drawPolyline(QPolygonF(run))
                elif run:
                    p.drawEllipse(run[0], 1.5, 1.5)
                run = []
        p.end()


class QualityDock(QDockWidget):
    refresh_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Annotator quality (gold images)", parent)
        self.setObjectName("quality_dock")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.empty = QLabel("No gold image has been submitted yet.")
        self.legend = QLabel(f"<span style='color:{RECALL_COLOR}'>■ recall</span> &nbsp; "
                             f"<span style='color:{PRECISION_COLOR}'>■ precision</span> (per gold image, oldest left)")
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.refresh_button.clicked.connect(self.refresh_requested)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.empty)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.legend)
        layout.addWidget(self.refresh_button)
        self.setWidget(body)
        self.set_summary([])

    def set_summary(self, annotators: Sequence[dict[str, Any]]) -> None:
        """Rows as `projects.quality.annotator_summary` returns them."""
        self.table.setRowCount(len(annotators))
        for row, a in enumerate(annotators):
            cells = (a["author"], str(a["gold_images"]), _pct(a.get("precision")), _pct(a.get("recall")),
                     "–" if a.get("mean_iou") is None else f"{a['mean_iou']:.3f}")
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
            self.table.setCellWidget(row, len(COLUMNS) - 1, Sparkline(a.get("history", [])))
        self.empty.setVisible(not annotators)
        self.table.setVisible(bool(annotators))

    def cell_text(self, row: int, column: str) -> str:
        item = self.table.item(row, COLUMNS.index(column))
        return item.text() if item else ""

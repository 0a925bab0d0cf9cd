"""What the canvas shows where a picture cannot be: a missing or corrupt file, or one still decoding.

It covers the image's recorded size (so its boxes still line up) and its message is drawn at screen
size above everything; it allocates no pixels, so a placeholder for an 8000x6000 image costs nothing.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

ERROR = "error"
LOADING = "loading"


class PlaceholderItem(QGraphicsItem):
    def __init__(self, width: int, height: int, message: str, kind: str = ERROR):
        super().__init__()
        self.width, self.height = max(int(width), 1), max(int(height), 1)
        self.message = message
        self.kind = kind
        self.setZValue(0)

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, self.width, self.height)

    def title(self) -> str:
        return "Cannot show this image" if self.kind == ERROR else "Loading…"

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        """The image's area, hatched when the picture is missing. The message itself is drawn by
        `paint_banner` above the boxes, so boxes never hide it."""
        rect = self.boundingRect()
        error = self.kind == ERROR
        painter.fillRect(rect, QColor(58, 44, 44) if error else QColor(48, 48, 52))
        if error:
            brush = QBrush(QColor(90, 60, 60), Qt.BrushStyle.BDiagPattern)
            brush.setTransform(painter.worldTransform().inverted()[0])  # hatch at screen scale
            painter.fillRect(rect, brush)

    def paint_banner(self, painter: QPainter, viewport: QRectF) -> None:
        """Title and message in a box at the top of the viewport (device coordinates)."""
        error = self.kind == ERROR
        font = QFont()
        font.setPixelSize(14)
        painter.setFont(font)
        text = (f"⚠  {self.title()}\n{self.message}\nIts boxes are shown and kept; drawing is off for this image."
                if error else f"{self.title()}  {self.message}")
        width = min(viewport.width() - 40, 720)
        bounds = painter.boundingRect(QRectF(0, 0, width - 24, 1000),
                                      Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap, text)
        box = QRectF(viewport.center().x() - width / 2, viewport.top() + 16, width, bounds.height() + 20)
        painter.setPen(QPen(QColor(200, 90, 80) if error else QColor(110, 110, 120), 1))
        painter.setBrush(QColor(30, 20, 20, 235) if error else QColor(30, 30, 34, 220))
        painter.drawRoundedRect(box, 6, 6)
        painter.setPen(QColor(255, 215, 205) if error else QColor(210, 210, 215))
        painter.drawText(box.adjusted(12, 10, -12, -10), Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap, text)

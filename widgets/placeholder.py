"""What the canvas shows where a picture cannot be: a missing or corrupt file, or one still decoding.

It covers the image's recorded size (so its boxes still line up) and draws its message at screen
size; it allocates no pixels, so a placeholder for an 8000x6000 image costs nothing.
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

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        rect = self.boundingRect()
        error = self.kind == ERROR
        painter.fillRect(rect, QColor(58, 44, 44) if error else QColor(48, 48, 52))
        if error:
            brush = QBrush(QColor(90, 60, 60), Qt.BrushStyle.BDiagPattern)
            brush.setTransform(painter.worldTransform().inverted()[0])  # hatch at screen scale
            painter.fillRect(rect, brush)
        painter.save()
        box = painter.worldTransform().mapRect(rect)
        painter.resetTransform()
        font = QFont()
        font.setPixelSize(16)
        painter.setFont(font)
        painter.setPen(QPen(QColor(255, 210, 200) if error else QColor(200, 200, 205)))
        title = "Cannot show this image" if error else "Loading…"
        text = f"⚠  {title}\n\n{self.message}" if error else title
        painter.drawText(box.adjusted(24, 24, -24, -24),
                         Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, text)
        painter.restore()

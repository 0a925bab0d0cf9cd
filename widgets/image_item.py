"""The picture under the boxes, painted from a small pyramid so that huge images stay fluid.

An 8000x6000 photo is 190 MB of pixels; scaling all of it down on every repaint would stall the GUI
thread. The loader (off the GUI thread) hands over the full image plus halved copies; this item
paints only the exposed part, from the smallest level that still has at least one pixel per screen
pixel. At high zoom it paints with nearest-neighbour sampling, so pixels stay exact squares.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget


class ImageItem(QGraphicsItem):
    def __init__(self, levels: list[QImage]):
        """`levels[0]` is the full image; each next level is about half the size of the previous."""
        super().__init__()
        if not levels or levels[0].isNull():
            raise ValueError("an image item needs at least one non-empty image")
        self.levels = levels
        self.width, self.height = levels[0].width(), levels[0].height()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self.setZValue(0)
        self.last_level = 0  # which level the last paint used (for tests and benchmarks)

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, self.width, self.height)

    def level_for(self, scale: float) -> int:
        """The smallest level with at least `scale` of the full resolution."""
        best = 0
        for i, img in enumerate(self.levels):
            if img.width() / self.width >= scale:
                best = i
        return best

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        scale = QStyleOptionGraphicsItem.levelOfDetailFromTransform(painter.worldTransform())
        level = self.level_for(scale)
        self.last_level = level
        img = self.levels[level]
        exposed = option.exposedRect.intersected(self.boundingRect())
        if exposed.isEmpty():
            return
        fx, fy = img.width() / self.width, img.height() / self.height
        source = QRectF(exposed.x() * fx, exposed.y() * fy, exposed.width() * fx, exposed.height() * fy)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, scale < 1.0)
        painter.drawImage(exposed, img, source)

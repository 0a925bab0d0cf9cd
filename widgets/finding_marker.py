"""Where a lint finding points, drawn on the canvas: a thick dotted frame with a tag, never editable.

A "missed object" finding points at a place with no box (after the proposal there was rejected, nothing
else is drawn there): the frame shows the model's box, so zooming to a finding never lands on an
empty spot. The frame sits above the boxes, ignores the mouse (the canvas hit-tests only boxes and
proposals) and keeps its screen size at every zoom, like the boxes' tags.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

from projects.values import Box

MARKER_Z = 30  # above annotations (10) and proposals (20), under the drawing readout
PAD_PX = 4.0  # the frame stands this many screen pixels outside the box, so the box's own edge stays visible


class FindingMarker(QGraphicsItem):
    def __init__(self, box: Box, text: str = "", color: str = "#e6194b"):
        super().__init__()
        self._rect = QRectF(QPointF(box[0], box[1]), QPointF(box[2], box[3]))
        self.text = text
        self.color = QColor(color)
        self._scale = 1.0
        self.setZValue(MARKER_Z)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    def box(self) -> Box:
        r = self._rect
        return (r.left(), r.top(), r.right(), r.bottom())

    def set_view_scale(self, scale: float) -> None:
        if scale > 0 and scale != self._scale:
            self.prepareGeometryChange()
            self._scale = scale

    def boundingRect(self) -> QRectF:
        m = (PAD_PX + 3) / self._scale
        return self._rect.adjusted(-m, -m, m + 260.0 / self._scale, m + 24.0 / self._scale)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        t = painter.worldTransform()
        frame = t.mapRect(self._rect).adjusted(-PAD_PX, -PAD_PX, PAD_PX, PAD_PX)
        painter.save()
        painter.resetTransform()
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor(0, 0, 0, 200), 4))  # a dark halo: the frame reads on light and dark images
        painter.drawRect(frame)
        painter.setPen(QPen(self.color, 2, Qt.PenStyle.DotLine))
        painter.drawRect(frame)
        if self.text:
            font = QFont()
            font.setPixelSize(12)
            font.setItalic(True)
            painter.setFont(font)
            fm = QFontMetricsF(font)
            w, h = fm.horizontalAdvance(self.text) + 10, fm.height() + 4
            top = frame.bottom()  # under the frame: the box's own tag sits above its top edge
            tag = QRectF(frame.left(), top, w, h)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(0, 0, 0, 210))
            painter.drawRect(tag)
            painter.setPen(self.color.lighter(140))
            painter.drawText(tag, Qt.AlignmentFlag.AlignCenter, self.text)
        painter.restore()

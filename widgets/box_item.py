"""One bounding box on the canvas, in one of two styles: an annotation or a model's proposal.

The item only paints and answers hit tests; the canvas owns the mouse (draw, move, resize) so that
the gesture rules live in one place. Its rectangle is kept in image (scene) coordinates with the
item at the origin, so a box's numbers are the numbers stored in the workspace. Pens are cosmetic
and handles and text are drawn at a fixed screen size, so boxes read the same at every zoom.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

from projects.values import Box

ANNOTATION = "annotation"
PROPOSAL = "proposal"
HANDLE_PX = 9.0  # handle side on screen, whatever the zoom
HANDLES = ("tl", "t", "tr", "r", "br", "b", "bl", "l")


@dataclass(frozen=True)
class BoxSpec:
    """What the canvas needs to draw a box: the widgets never see database rows."""

    id: int
    label: str
    color: str
    box: Box
    score: float | None = None


class BoxItem(QGraphicsItem):
    def __init__(self, spec: BoxSpec, style: str = ANNOTATION):
        super().__init__()
        if style not in (ANNOTATION, PROPOSAL):
            raise ValueError(f"unknown box style {style!r}")
        self.style = style
        self.item_id = spec.id
        self.label = spec.label
        self.color = QColor(spec.color)
        self.score = spec.score
        self._rect = QRectF(QPointF(spec.box[0], spec.box[1]), QPointF(spec.box[2], spec.box[3]))
        self._scale = 1.0  # view scale (screen px per image px), set by the canvas
        self._tag_pos: QPointF | None = None  # the tag's top-left from the box's, in screen px (None: above it)
        self._tag_size: tuple[str, float, float] | None = None  # (text, width, height) in screen px
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, True)
        self.setZValue(20 if style == PROPOSAL else 10)

    # --- data --------------------------------------------------------------------------------
    def update_spec(self, spec: BoxSpec) -> None:
        """Take new data; repaint only when something shown changed (an edit re-sends every box)."""
        color = QColor(spec.color)
        if (spec.label, color, spec.score) != (self.label, self.color, self.score):
            self.prepareGeometryChange()  # the tag's width may change with its text
            self.label, self.color, self.score = spec.label, color, spec.score
            self.update()
        self.set_box(spec.box)

    def box(self) -> Box:
        r = self._rect
        return (r.left(), r.top(), r.right(), r.bottom())

    def rect(self) -> QRectF:
        return QRectF(self._rect)

    def set_box(self, box: Box) -> None:
        rect = QRectF(QPointF(box[0], box[1]), QPointF(box[2], box[3]))
        if rect != self._rect:
            self.prepareGeometryChange()
            self._rect = rect
            self.update()

    def set_view_scale(self, scale: float) -> None:
        """Handles and text keep their screen size, so the bounding rect depends on the zoom."""
        if scale > 0 and scale != self._scale:
            self.prepareGeometryChange()
            self._scale = scale

    # --- hit tests ---------------------------------------------------------------------------
    def _margin(self) -> float:
        return HANDLE_PX / self._scale

    def handle_points(self) -> dict[str, QPointF]:
        r = self._rect
        cx, cy = r.center().x(), r.center().y()
        return {"tl": r.topLeft(), "t": QPointF(cx, r.top()), "tr": r.topRight(), "r": QPointF(r.right(), cy),
                "br": r.bottomRight(), "b": QPointF(cx, r.bottom()), "bl": r.bottomLeft(), "l": QPointF(r.left(), cy)}

    def handle_at(self, pos: QPointF) -> str | None:
        """The resize handle under `pos` (scene coordinates), corners first; None off the handles."""
        if not self.isSelected():
            return None
        # a handle reaches at most a quarter of the box into it, so the middle half of a small box (a few screen
        # pixels at this zoom) always moves the box instead of resizing it
        tol_x = min(self._margin(), self._rect.width() / 4)
        tol_y = min(self._margin(), self._rect.height() / 4)
        for name, p in self.handle_points().items():
            if abs(p.x() - pos.x()) <= tol_x and abs(p.y() - pos.y()) <= tol_y:
                return name
        return None

    def hit(self, pos: QPointF) -> bool:
        """Inside the box, or within a few screen pixels of its edge (thin boxes stay clickable)."""
        tol = 3.0 / self._scale
        return self._rect.adjusted(-tol, -tol, tol, tol).contains(pos)

    def area(self) -> float:
        return self._rect.width() * self._rect.height()

    # --- painting ----------------------------------------------------------------------------
    def boundingRect(self) -> QRectF:
        m = self._margin()
        text_h = 22.0 / self._scale  # the label tag above the box
        rect = self._rect.adjusted(-m, -m - text_h, m + 200.0 / self._scale, m)
        if self._tag_pos is not None:
            tag = self.tag_rect()
            s = self._scale
            rect = rect.united(QRectF(self._rect.left() + tag.x() / s, self._rect.top() + tag.y() / s,
                                      tag.width() / s, tag.height() / s).adjusted(-m, -m, m, m))
        return rect

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        selected = self.isSelected()
        pen = QPen(self.color, 3.0 if selected else 2.0)
        pen.setCosmetic(True)
        if self.style == PROPOSAL:
            pen.setStyle(Qt.PenStyle.DashLine)
        painter.setPen(pen)
        fill = QColor(self.color)
        fill.setAlpha(60 if selected else (0 if self.style == PROPOSAL else 22))
        painter.setBrush(QBrush(fill))
        painter.drawRect(self._rect)
        self._paint_tag(painter)
        if selected:  # a selected proposal can be resized too: it then becomes an annotation
            self._paint_handles(painter)

    def tag_text(self) -> str:
        if self.style == PROPOSAL and self.score is not None:
            return f"{self.label} {self.score:.2f}"
        return self.label

    def _font(self) -> QFont:
        font = QFont()
        font.setPixelSize(12)
        font.setBold(self.style == PROPOSAL)
        return font

    def tag_size(self) -> tuple[float, float]:
        """The tag's width and height on screen (pixels, whatever the zoom)."""
        text = self.tag_text()
        if self._tag_size is None or self._tag_size[0] != text:
            fm = QFontMetricsF(self._font())
            self._tag_size = (text, fm.horizontalAdvance(text) + 8 if text else 0.0, fm.height() + 2)
        return self._tag_size[1], self._tag_size[2]

    def tag_pos(self) -> QPointF | None:
        return None if self._tag_pos is None else QPointF(self._tag_pos)

    def set_tag_pos(self, pos: QPointF | None) -> None:
        """Where the canvas placed the tag so that it hides no other tag: its top-left relative to the box's
        top-left corner, in screen pixels (None: the default, just above the corner)."""
        if pos != self._tag_pos:
            self.prepareGeometryChange()
            self._tag_pos = None if pos is None else QPointF(pos)
            self.update()

    def tag_rect(self) -> QRectF:
        """The tag in screen pixels relative to the box's top-left corner (tests check tags never overlap)."""
        w, h = self.tag_size()
        pos = self._tag_pos if self._tag_pos is not None else QPointF(0.0, -h)
        return QRectF(pos.x(), pos.y(), w, h)

    def _paint_tag(self, painter: QPainter) -> None:
        """The label (and score) in a small tag at screen size: above the box's top-left corner, or where
        the canvas placed it so that it hides no other box's tag."""
        text = self.tag_text()
        if not text:
            return
        painter.save()
        anchor = painter.worldTransform().map(self._rect.topLeft())
        painter.resetTransform()
        painter.setFont(self._font())
        w, h = self.tag_size()
        if self._tag_pos is not None:
            tag = QRectF(anchor.x() + self._tag_pos.x(), anchor.y() + self._tag_pos.y(), w, h)
        else:
            top = anchor.y() - h if anchor.y() - h >= 0 else anchor.y()
            tag = QRectF(anchor.x(), top, w, h)
        bg = QColor(self.color)
        if self.style == PROPOSAL:
            painter.setPen(QPen(self.color, 1, Qt.PenStyle.DashLine))
            painter.setBrush(QColor(20, 20, 20, 200))
            painter.drawRect(tag)
            painter.setPen(self.color.lighter(130))
        else:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(bg)
            painter.drawRect(tag)
            painter.setPen(Qt.GlobalColor.black if bg.lightness() > 140 else Qt.GlobalColor.white)
        painter.drawText(tag, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()

    def _paint_handles(self, painter: QPainter) -> None:
        painter.save()
        t = painter.worldTransform()
        painter.resetTransform()
        pen = QPen(Qt.GlobalColor.black, 1)
        painter.setPen(pen)
        painter.setBrush(Qt.GlobalColor.white)
        s = HANDLE_PX
        for p in self.handle_points().values():
            c = t.map(p)
            painter.drawRect(QRectF(c.x() - s / 2, c.y() - s / 2, s, s))
        painter.restore()

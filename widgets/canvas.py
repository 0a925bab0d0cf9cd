"""The canvas: one image with its boxes, and the mouse gestures that edit them.

Gestures (the app's key table documents the same ones):
- left-drag on the image: draw a box (crosshair and size readout while drawing), also over an
  unselected box, so objects in front of big boxes can still be boxed;
- click a box: select it (Ctrl+click toggles); drag a selected box: move it; drag a handle of a
  selected box: resize it;
- wheel: zoom at the cursor; middle-drag or Space+left-drag: pan;
- double-click a proposal: accept it.

The canvas never writes anything: it edits its items locally while the mouse is down and, on
release, emits what changed (`box_drawn`, `boxes_changed`). The app turns that into an undoable
command that writes the workspace and then hands the stored boxes back with `set_annotations`.
Coordinates are image pixels (pixel edges at integers); new corners snap to whole pixels and every
box is clamped to the image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from PySide6.QtCore import QPoint, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QKeyEvent, QMouseEvent, QPainter, QPen, QWheelEvent
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsLineItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QWidget,
)

from widgets.box_item import ANNOTATION, PROPOSAL, Box, BoxItem, BoxSpec
from widgets.finding_marker import FindingMarker
from widgets.image_item import ImageItem
from widgets.placeholder import ERROR, LOADING, PlaceholderItem

MIN_BOX = 2.0  # a drag smaller than this (image pixels) is a click, not a box
MIN_ZOOM, MAX_ZOOM = 0.01, 64.0
TAG_LAYOUT_MAX = 400  # above this many boxes on one image, tags keep their default place (layout cost)
TAG_CELL = 128.0  # screen px: the grid that finds a tag's neighbours


def _spec(p: BoxSpec | Sequence) -> BoxSpec:
    """Accept a BoxSpec or a plain (id, label, color, box[, score]) tuple."""
    if isinstance(p, BoxSpec):
        return p
    return BoxSpec(int(p[0]), str(p[1]), str(p[2]), tuple(float(v) for v in p[3]),
                   None if len(p) < 5 or p[4] is None else float(p[4]))


class _Readout(QGraphicsItem):
    """A small text tag that keeps its screen size (size while drawing, e.g. "120 × 48")."""

    def __init__(self):
        super().__init__()
        self.text = ""
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
        self.setZValue(100)
        self._font = QFont()
        self._font.setPixelSize(12)

    def set_text(self, text: str) -> None:
        self.prepareGeometryChange()
        self.text = text
        self.update()

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, 9 * len(self.text) + 12, 20)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setBrush(QColor(0, 0, 0, 190))
        painter.setPen(Qt.PenStyle.NoPen)
        r = self.boundingRect()
        painter.drawRoundedRect(r, 3, 3)
        painter.setPen(QColor(255, 255, 255))
        painter.setFont(self._font)
        painter.drawText(r, Qt.AlignmentFlag.AlignCenter, self.text)


class Canvas(QGraphicsView):
    box_drawn = Signal(object)  # Box: the user drew a new box
    boxes_changed = Signal(object)  # dict[int, Box]: boxes moved or resized with the mouse (one gesture)
    boxes_nudged = Signal(object)  # dict[int, Box]: boxes moved with the arrow keys (one key press)
    selection_changed = Signal(object)  # list[int]: selected annotation ids, after a user action
    proposal_selected = Signal(object)  # list[int]: selected proposal ids
    proposal_accepted = Signal(int)
    proposal_rejected = Signal(int)
    proposal_adjusted = Signal(int, object)  # (proposal id, Box): a proposal was moved or resized
    refine_clicked = Signal(float, float)  # Alt+click: image coordinates of an object to box
    refine_dragged = Signal(object)  # Alt+drag: a rough Box to tighten
    cursor_moved = Signal(float, float)  # image coordinates under the mouse
    zoom_changed = Signal(float)  # screen pixels per image pixel
    draw_mode_changed = Signal(bool)  # W armed the next drag to draw (True), or it is done / cancelled (False)
    draw_refused = Signal(str, str)  # a draw or refine began on a placeholder: its kind ("error"/"loading"), message

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(QColor(36, 36, 40))
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._picture: ImageItem | PlaceholderItem | None = None
        self._size = (0, 0)
        self._editable = False
        self._boxes: dict[int, BoxItem] = {}
        self._proposals: dict[int, BoxItem] = {}
        self._marker: FindingMarker | None = None  # where the selected lint finding points
        self._fit_mode = True
        self._space = False
        self._mode: str | None = None  # draw, move, resize, pan
        self._press_scene = QPointF()
        self._press_view = QPoint()
        self._handle: str | None = None
        self._pending: BoxItem | None = None  # an unselected box pressed: click selects it, drag draws
        self._orig: dict[int, QRectF] = {}
        self._target: dict[int, BoxItem] = self._boxes  # the items a move/resize acts on
        self._draw_armed = False  # W: the next left-drag draws, wherever it starts
        self._boxes_shown = True  # Ctrl+H hides boxes and proposals
        self._hint = ""  # the first-run hint at the bottom of the view
        pen = QPen(QColor(255, 255, 255, 170), 1, Qt.PenStyle.DashLine)
        pen.setCosmetic(True)
        self._cross = (QGraphicsLineItem(), QGraphicsLineItem())
        for line in self._cross:
            line.setPen(pen)
            line.setZValue(90)
            line.setVisible(False)
            self.scene().addItem(line)
        draft_pen = QPen(QColor(255, 255, 0), 1.5, Qt.PenStyle.DashLine)
        draft_pen.setCosmetic(True)
        self._draft = QGraphicsRectItem()
        self._draft.setPen(draft_pen)
        self._draft.setBrush(QColor(255, 255, 0, 30))
        self._draft.setZValue(80)
        self._draft.setVisible(False)
        self.scene().addItem(self._draft)
        self._readout = _Readout()
        self._readout.setVisible(False)
        self.scene().addItem(self._readout)

    # --- content -----------------------------------------------------------------------------
    def set_image(self, levels: list[QImage]) -> None:
        """Show a decoded image (full resolution first, then smaller levels); boxes stay."""
        self._set_picture(ImageItem(levels))
        self._editable = True

    def set_placeholder(self, width: int, height: int, message: str, kind: str = ERROR) -> None:
        """Show a placeholder of the image's recorded size: `kind` is "error" or "loading".
        Nothing can be drawn on it, but its boxes are still shown."""
        if kind not in (ERROR, LOADING):
            raise ValueError(f"unknown placeholder kind {kind!r}")
        self._set_picture(PlaceholderItem(width or 640, height or 480, message, kind))
        self._editable = False
        self._cancel_gesture()

    def _set_picture(self, item: ImageItem | PlaceholderItem) -> None:
        if self._picture is not None:
            self.scene().removeItem(self._picture)
        self._picture = item
        self.scene().addItem(item)
        size = (item.width, item.height)
        if size != self._size:
            self._size = size
            m = max(size) * 0.5
            self.scene().setSceneRect(QRectF(-m, -m, size[0] + 2 * m, size[1] + 2 * m))
            self._fit_mode = True
        if self._fit_mode:
            self.fit()
        self.viewport().update()

    def picture(self) -> ImageItem | PlaceholderItem | None:
        return self._picture

    def has_image(self) -> bool:
        return isinstance(self._picture, ImageItem)

    def image_size(self) -> tuple[int, int]:
        return self._size

    def is_editable(self) -> bool:
        return self._editable

    def set_annotations(self, specs: Iterable[BoxSpec | Sequence]) -> None:
        """Show these annotation boxes; items are reused by id, so the selection survives a refresh."""
        self._sync(self._boxes, [_spec(s) for s in specs], ANNOTATION)

    def set_proposals(self, proposals: Iterable[BoxSpec | Sequence]) -> None:
        """Show model proposals, dashed with their score: `(id, label, color, box, score)` each."""
        self._sync(self._proposals, [_spec(p) for p in proposals], PROPOSAL)

    def _sync(self, items: dict[int, BoxItem], specs: list[BoxSpec], style: str) -> None:
        self._sync_items(items, specs, style)
        self._layout_tags()

    def _layout_tags(self) -> None:
        """Place every box's tag where it hides no other tag ("Car 0.51" over "Vehicle 0.63" was unreadable).

        Annotations first (their tags stay above their corners when they can), then proposals, best score first.
        Each tag takes the first free place of: above the top-left corner, inside it, above or inside the
        top-right corner, below the bottom-left corner, then stacked higher above the corner. Screen pixels:
        tags keep their size at every zoom, so the layout is redone when the zoom changes."""
        items = [it for it in (*self._boxes.values(),
                               *sorted(self._proposals.values(), key=lambda it: -(it.score or 0.0)))
                 if it.isVisible()]
        if len(items) > TAG_LAYOUT_MAX:
            for it in items:
                it.set_tag_pos(None)
            return
        s = self.scale_factor()
        grid: dict[tuple[int, int], list[QRectF]] = {}

        def cells(r: QRectF):
            for cx in range(int(r.left() // TAG_CELL), int(r.right() // TAG_CELL) + 1):
                for cy in range(int(r.top() // TAG_CELL), int(r.bottom() // TAG_CELL) + 1):
                    yield cx, cy

        def free(r: QRectF) -> bool:
            return not any(r.intersects(q) for c in cells(r) for q in grid.get(c, ()))

        for it in items:
            w, h = it.tag_size()
            x1, y1, x2, y2 = it.box()
            ax, ay, bw, bh = x1 * s, y1 * s, (x2 - x1) * s, (y2 - y1) * s
            places = [(0.0, -h), (0.0, 0.0), (bw - w, -h), (bw - w, 0.0), (0.0, bh)]
            places += [(0.0, -h * k) for k in range(2, 8)]
            dx, dy = next(((dx, dy) for dx, dy in places if free(QRectF(ax + dx, ay + dy, w, h))), places[0])
            r = QRectF(ax + dx, ay + dy, w, h)
            for c in cells(r):
                grid.setdefault(c, []).append(r)
            it.set_tag_pos(None if (dx, dy) == places[0] else QPointF(dx, dy))

    def _sync_items(self, items: dict[int, BoxItem], specs: list[BoxSpec], style: str) -> None:
        scale = self.scale_factor()
        wanted = {s.id for s in specs}
        for gone in [i for i in items if i not in wanted]:
            self.scene().removeItem(items.pop(gone))
        for s in specs:
            if s.id in items:
                items[s.id].update_spec(s)
            else:
                item = BoxItem(s, style)
                item.set_view_scale(scale)
                item.setVisible(self._boxes_shown)
                items[s.id] = item
                self.scene().addItem(item)

    def set_marker(self, box: Box | None, text: str = "", color: str = "#e6194b") -> None:
        """Frame the place a lint finding points at (None: no frame). Not a box: it cannot be selected."""
        if self._marker is not None:
            self.scene().removeItem(self._marker)
            self._marker = None
        if box is not None:
            self._marker = FindingMarker(tuple(float(v) for v in box), text, color)
            self._marker.set_view_scale(self.scale_factor())
            self._marker.setVisible(self._boxes_shown)
            self.scene().addItem(self._marker)

    def marker(self) -> FindingMarker | None:
        return self._marker

    def annotation_boxes(self) -> dict[int, Box]:
        return {i: item.box() for i, item in self._boxes.items()}

    def proposal_boxes(self) -> dict[int, Box]:
        return {i: item.box() for i, item in self._proposals.items()}

    def box_item(self, item_id: int, proposal: bool = False) -> BoxItem | None:
        return (self._proposals if proposal else self._boxes).get(item_id)

    # --- W, Ctrl+H and the hint ----------------------------------------------------------------
    def arm_draw(self, on: bool = True) -> bool:
        """W, as in labelImg: the next left-drag draws a box wherever it starts, over a box or a pre-label
        too (a plain drag there selects or moves). One box, then the usual gestures again; Esc disarms.
        Returns False when nothing can be drawn on what is shown (a placeholder says why)."""
        if on and not self._editable:
            if isinstance(self._picture, PlaceholderItem):
                self.draw_refused.emit(self._picture.kind, self._picture.message)
            return False
        if on != self._draw_armed:
            self._draw_armed = on
            self.viewport().setCursor(Qt.CursorShape.CrossCursor if on else Qt.CursorShape.ArrowCursor)
            self.draw_mode_changed.emit(on)
        return True

    def draw_armed(self) -> bool:
        return self._draw_armed

    def set_boxes_shown(self, shown: bool) -> None:
        """Ctrl+H: hide the boxes, pre-labels and the finding frame to see the image alone, and show them
        again. Hidden items cannot be clicked or dragged (a drag draws, as on bare image); the selection is
        cleared, so no key acts on a box nobody can see."""
        self._boxes_shown = shown
        for item in (*self._boxes.values(), *self._proposals.values()):
            item.setVisible(shown)
        if self._marker is not None:
            self._marker.setVisible(shown)
        if not shown and (self.selected_ids() or self.selected_proposal_ids()):
            self.select([])
            self.selection_changed.emit([])
        self._layout_tags()
        self.viewport().update()

    def boxes_shown(self) -> bool:
        return self._boxes_shown

    def set_hint(self, text: str) -> None:
        """A line of help at the bottom of the view (the first-run hint); empty hides it."""
        self._hint = text
        self.viewport().update()

    def hint(self) -> str:
        return self._hint

    # --- selection ---------------------------------------------------------------------------
    def selected_ids(self) -> list[int]:
        return sorted(i for i, item in self._boxes.items() if item.isSelected())

    def selected_proposal_ids(self) -> list[int]:
        return sorted(i for i, item in self._proposals.items() if item.isSelected())

    def select(self, ids: Iterable[int], proposals: Iterable[int] = ()) -> None:
        """Select exactly these boxes (no signal: the caller already knows)."""
        ids, proposals = set(ids), set(proposals)
        for i, item in self._boxes.items():
            item.setSelected(i in ids)
        for i, item in self._proposals.items():
            item.setSelected(i in proposals)

    def select_next(self, step: int = 1) -> None:
        """Cycle the selection through the boxes in reading order (Tab / Shift+Tab)."""
        if not self._boxes or not self._boxes_shown:
            return
        order = sorted(self._boxes, key=lambda i: (self._boxes[i].box()[1], self._boxes[i].box()[0], i))
        sel = self.selected_ids()
        k = (order.index(sel[0]) + step) % len(order) if sel else (0 if step > 0 else len(order) - 1)
        self.select([order[k]])
        self.selection_changed.emit(self.selected_ids())

    def accept_proposal(self, proposal_id: int) -> None:
        if proposal_id in self._proposals:
            self.proposal_accepted.emit(proposal_id)

    def reject_proposal(self, proposal_id: int) -> None:
        if proposal_id in self._proposals:
            self.proposal_rejected.emit(proposal_id)

    # --- keyboard edits ----------------------------------------------------------------------
    def nudge(self, dx: float, dy: float) -> None:
        """Move the selected boxes by (dx, dy) pixels, stopping at the image border."""
        items = [self._boxes[i] for i in self.selected_ids()]
        if not items or not self._size[0] or not self._editable:
            return
        dx, dy = self._clamp_delta([it.rect() for it in items], dx, dy)
        if dx == 0 and dy == 0:
            return
        changed = {}
        for it in items:
            r = it.rect().translated(dx, dy)
            it.set_box((r.left(), r.top(), r.right(), r.bottom()))
            changed[it.item_id] = it.box()
        self.boxes_nudged.emit(changed)

    # --- zoom --------------------------------------------------------------------------------
    def scale_factor(self) -> float:
        return self.transform().m11()

    def fit(self) -> None:
        """Fit the whole image in the window (and keep fitting when the window resizes)."""
        self._fit_mode = True
        if not self._size[0]:
            return
        view = self.viewport().rect()
        s = min(view.width() / self._size[0], view.height() / self._size[1]) * 0.98
        self._apply_scale(max(MIN_ZOOM, min(MAX_ZOOM, s)))
        self.centerOn(self._size[0] / 2, self._size[1] / 2)

    def open_fitted(self) -> None:
        """The next picture set opens fitted to the window: a new image does not inherit the zoom of the
        last one (a lint finding's close-up, a wheel zoom)."""
        self._fit_mode = True

    def actual_size(self) -> None:
        """One image pixel per screen pixel, keeping the view's centre."""
        center = self.mapToScene(self.viewport().rect().center())
        self._fit_mode = False
        self._apply_scale(1.0)
        self.centerOn(center)

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom by `factor`, keeping the image point under `anchor` (view coordinates) in place."""
        anchor = anchor if anchor is not None else QPointF(self.viewport().rect().center())
        target = max(MIN_ZOOM, min(MAX_ZOOM, self.scale_factor() * factor))
        if target == self.scale_factor():
            return
        fixed = self.mapToScene(anchor.toPoint())
        self._fit_mode = False
        self._apply_scale(target)
        moved = self.mapFromScene(fixed) - anchor.toPoint()
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + moved.x())
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + moved.y())

    def _apply_scale(self, s: float) -> None:
        self.resetTransform()
        self.scale(s, s)
        for item in (*self._boxes.values(), *self._proposals.values(), *filter(None, [self._marker])):
            item.set_view_scale(s)
        self._layout_tags()
        self.zoom_changed.emit(s)

    # --- geometry helpers ----------------------------------------------------------------------
    def to_view(self, x: float, y: float) -> QPoint:
        """Where image point (x, y) is in viewport pixels (tests and benchmarks drive the mouse with it)."""
        return self.mapFromScene(QPointF(x, y))

    def _clamp(self, p: QPointF, snap: bool = True) -> QPointF:
        w, h = self._size
        x, y = (round(p.x()), round(p.y())) if snap else (p.x(), p.y())
        return QPointF(min(max(x, 0.0), float(w)), min(max(y, 0.0), float(h)))

    def _clamp_delta(self, rects: list[QRectF], dx: float, dy: float) -> tuple[float, float]:
        w, h = self._size
        lo_x = max(-r.left() for r in rects)
        hi_x = min(w - r.right() for r in rects)
        lo_y = max(-r.top() for r in rects)
        hi_y = min(h - r.bottom() for r in rects)
        return min(max(dx, min(lo_x, 0.0)), max(hi_x, 0.0)), min(max(dy, min(lo_y, 0.0)), max(hi_y, 0.0))

    def _inside_image(self, p: QPointF) -> bool:
        return 0 <= p.x() <= self._size[0] and 0 <= p.y() <= self._size[1]

    def _hit(self, items: dict[int, BoxItem], p: QPointF) -> BoxItem | None:
        """The box under p: a selected one first, else the smallest (nested boxes stay reachable)."""
        hits = [it for it in items.values() if it.isVisible() and it.hit(p)]
        if not hits:
            return None
        return min(hits, key=lambda it: (not it.isSelected(), it.area()))

    # --- mouse -------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        p = self.mapToScene(event.position().toPoint())
        self._press_scene, self._press_view = p, event.position().toPoint()
        button = event.button()
        if button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton and self._space):
            self._mode = "pan"
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            return
        if button != Qt.MouseButton.LeftButton:
            return
        toggle = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
        if event.modifiers() & Qt.KeyboardModifier.AltModifier and self._editable and self._inside_image(p):
            self._mode = "refine"  # a click or a rough box for the model to tighten
            self._press_scene = self._clamp(p, snap=False)
            self._draft.setRect(QRectF(self._press_scene, self._press_scene))
            self._draft.setVisible(True)
            return
        if self._draw_armed and self._editable and self._inside_image(p):
            had = self.selected_ids() or self.selected_proposal_ids()
            self.select([])
            if had:
                self.selection_changed.emit([])
            self._start_draw(p)  # W: a box, even where the drag starts on another box or a pre-label
            return
        for item in self._proposals.values():
            handle = item.handle_at(p) if self._editable and item.isVisible() else None
            if handle:
                self._start(("resize", handle), [item], self._proposals)
                return
        proposal = self._hit(self._proposals, p)
        if proposal is not None:
            was_selected = proposal.isSelected()
            self.select([] if not toggle else self.selected_ids(), [proposal.item_id])
            self.proposal_selected.emit([proposal.item_id])
            self.selection_changed.emit(self.selected_ids())
            if was_selected and self._editable and not toggle:  # dragging a selected proposal adjusts it
                self._start(("move", None), [proposal], self._proposals)
            return
        for item in self._boxes.values():
            handle = item.handle_at(p) if self._editable and item.isVisible() else None
            if handle:
                self._start(("resize", handle), [item])
                return
        box = self._hit(self._boxes, p)
        if box is not None and (toggle or box.isSelected() or not self._editable):
            if toggle:
                box.setSelected(not box.isSelected())
            elif not box.isSelected():
                self.select([box.item_id])
            self.selection_changed.emit(self.selected_ids())
            if box.isSelected() and self._editable:  # boxes on a placeholder can be selected, not moved
                self._start(("move", None), [self._boxes[i] for i in self.selected_ids()])
            return
        if box is not None:  # an unselected box: a click selects it, a drag draws a new box over it
            self._mode, self._pending = "press", box
            self._press_scene = self._clamp(p)
            return
        had = self.selected_ids() or self.selected_proposal_ids()
        self.select([])
        if had:
            self.selection_changed.emit([])
        if self._editable and self._inside_image(p):
            self._start_draw(p)
        elif isinstance(self._picture, PlaceholderItem) and self._inside_image(p):
            self.draw_refused.emit(self._picture.kind, self._picture.message)  # never a silent no-op

    def _start_draw(self, p: QPointF) -> None:
        self._mode = "draw"
        self._press_scene = self._clamp(p)
        self._draft.setRect(QRectF(self._press_scene, self._press_scene))
        self._draft.setVisible(True)
        self._update_readout(p)

    def _start(self, mode: tuple[str, str | None], items: list[BoxItem],
               target: dict[int, BoxItem] | None = None) -> None:
        self._mode, self._handle = mode
        self._target = self._boxes if target is None else target
        self._orig = {it.item_id: it.rect() for it in items}

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        view_pos = event.position().toPoint()
        p = self.mapToScene(view_pos)
        self.cursor_moved.emit(p.x(), p.y())
        if self._mode == "pan":
            d = view_pos - self._press_view
            self._press_view = view_pos
            self._fit_mode = False
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - d.x())
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - d.y())
            return
        self._update_crosshair(p)
        if self._mode == "press" and (view_pos - self._press_view).manhattanLength() >= 4:
            self._mode, self._pending = "draw", None
            self.select([])
            self.selection_changed.emit([])
            self._draft.setRect(QRectF(self._press_scene, self._press_scene))
            self._draft.setVisible(True)
        if self._mode in ("draw", "refine"):
            self._draft.setRect(QRectF(self._press_scene, self._clamp(p)).normalized())
            self._update_readout(p)
        elif self._mode == "move":
            rects = list(self._orig.values())
            dx, dy = self._clamp_delta(rects, round(p.x() - self._press_scene.x()),
                                       round(p.y() - self._press_scene.y()))
            for i, r in self._orig.items():
                moved = r.translated(dx, dy)
                self._target[i].set_box((moved.left(), moved.top(), moved.right(), moved.bottom()))
        elif self._mode == "resize":
            (i, r), = self._orig.items()
            q = self._clamp(p)
            x1, y1, x2, y2 = r.left(), r.top(), r.right(), r.bottom()
            if "l" in self._handle:
                x1 = q.x()
            if "r" in self._handle:
                x2 = q.x()
            if "t" in self._handle:
                y1 = q.y()
            if "b" in self._handle:
                y2 = q.y()
            self._target[i].set_box((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
            self._update_readout(p, self._target[i].rect())
        else:
            self._update_cursor(p)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        mode, self._mode = self._mode, None
        self._readout.setVisible(False)
        if mode == "press":
            self.select([self._pending.item_id])
            self._pending = None
            self.selection_changed.emit(self.selected_ids())
        elif mode == "pan":
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor if self._space else Qt.CursorShape.ArrowCursor)
        elif mode == "draw":
            self._draft.setVisible(False)
            r = self._draft.rect().normalized()
            if r.width() >= MIN_BOX and r.height() >= MIN_BOX:
                self.arm_draw(False)  # one box per W, as in labelImg
                self.box_drawn.emit((r.left(), r.top(), r.right(), r.bottom()))
        elif mode == "refine":
            self._draft.setVisible(False)
            r = self._draft.rect().normalized()
            if (event.position().toPoint() - self._press_view).manhattanLength() < 4:
                self.refine_clicked.emit(self._press_scene.x(), self._press_scene.y())
            elif r.width() >= MIN_BOX and r.height() >= MIN_BOX:
                self.refine_dragged.emit((r.left(), r.top(), r.right(), r.bottom()))
        elif mode in ("move", "resize"):
            target, self._target = self._target, self._boxes
            changed = {i: target[i].box() for i, r in self._orig.items() if i in target and target[i].rect() != r}
            self._orig = {}
            if not changed:
                return
            if target is self._proposals:
                for i, box in changed.items():
                    self.proposal_adjusted.emit(i, box)
            else:
                self.boxes_changed.emit(changed)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        p = self.mapToScene(event.position().toPoint())
        proposal = self._hit(self._proposals, p)
        if proposal is not None and event.button() == Qt.MouseButton.LeftButton:
            self.proposal_accepted.emit(proposal.item_id)
            return
        self.mousePressEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:
        delta = event.angleDelta().y()
        if delta:
            self.zoom_by(1.0015 ** delta, event.position())

    def leaveEvent(self, event) -> None:
        for line in self._cross:
            line.setVisible(False)
        super().leaveEvent(event)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fit_mode:
            self.fit()

    # --- keys the key table cannot express (a held Space pans) ---------------------------------
    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            return
        if event.key() == Qt.Key.Key_Escape and self._mode:
            self._cancel_gesture()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self.viewport().setCursor(Qt.CursorShape.ArrowCursor)
            return
        super().keyReleaseEvent(event)

    def cancel_gesture(self) -> bool:
        """Abandon a drawing, move or resize in progress (Escape); True when there was one."""
        had = self._mode in ("draw", "move", "resize", "refine") or self._draw_armed
        self._cancel_gesture()
        self.arm_draw(False)
        return had

    def _cancel_gesture(self) -> None:
        for i, r in self._orig.items():
            if i in self._target:
                self._target[i].set_box((r.left(), r.top(), r.right(), r.bottom()))
        self._orig = {}
        self._target = self._boxes
        self._mode = None
        self._pending = None
        self._draft.setVisible(False)
        self._readout.setVisible(False)

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        """A placeholder's message goes on top of the boxes, at the top of the view; the notes (boxes hidden,
        draw mode, the first-run hint) at the bottom."""
        view = QRectF(self.viewport().rect())
        if isinstance(self._picture, PlaceholderItem):
            painter.save()
            painter.resetTransform()
            self._picture.paint_banner(painter, view)
            painter.restore()
        notes = [text for on, text in ((not self._boxes_shown, "Boxes and pre-labels hidden: Ctrl+H shows them"),
                                       (self._draw_armed, "Draw: drag a box anywhere (Esc cancels)"),
                                       (bool(self._hint), self._hint)) if on]
        if notes:
            painter.save()
            painter.resetTransform()
            self._paint_notes(painter, view, notes)
            painter.restore()

    def _paint_notes(self, painter: QPainter, view: QRectF, notes: list[str]) -> None:
        font = QFont(self.font())
        font.setPixelSize(13)
        painter.setFont(font)
        fm = painter.fontMetrics()
        flags = Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap
        bottom = view.bottom() - 10
        for text in reversed(notes):  # a narrow view wraps the text; it is never cut
            room = max(40, int(view.width()) - 40)
            size = fm.boundingRect(0, 0, room, 10_000, int(flags), text).size()
            r = QRectF(view.center().x() - size.width() / 2 - 10, bottom - size.height() - 10,
                       size.width() + 20, size.height() + 10)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(0, 0, 0, 185))
            painter.drawRoundedRect(r, 5, 5)
            painter.setPen(QColor(255, 255, 255))
            painter.drawText(r, int(flags), text)
            bottom = r.top() - 6

    # --- feedback ------------------------------------------------------------------------------
    def _update_crosshair(self, p: QPointF) -> None:
        show = self._editable and self._inside_image(p) and self._mode in (None, "draw", "press")
        w, h = self._size
        self._cross[0].setLine(p.x(), 0, p.x(), h)
        self._cross[1].setLine(0, p.y(), w, p.y())
        for line in self._cross:
            line.setVisible(show)

    def _update_readout(self, p: QPointF, rect: QRectF | None = None) -> None:
        r = rect if rect is not None else self._draft.rect()
        self._readout.set_text(f"{r.width():.0f} × {r.height():.0f}")
        self._readout.setPos(p + QPointF(14 / self.scale_factor(), 14 / self.scale_factor()))
        self._readout.setVisible(True)

    def _update_cursor(self, p: QPointF) -> None:
        if self._space:
            return
        if self._draw_armed:
            self.viewport().setCursor(Qt.CursorShape.CrossCursor)
            return
        cursor = Qt.CursorShape.ArrowCursor
        for item in self._boxes.values():
            handle = item.handle_at(p) if item.isVisible() else None
            if handle:
                cursor = {"t": Qt.CursorShape.SizeVerCursor, "b": Qt.CursorShape.SizeVerCursor,
                          "l": Qt.CursorShape.SizeHorCursor, "r": Qt.CursorShape.SizeHorCursor,
                          "tl": Qt.CursorShape.SizeFDiagCursor, "br": Qt.CursorShape.SizeFDiagCursor,
                          }.get(handle, Qt.CursorShape.SizeBDiagCursor)
                break
        else:
            if self._hit(self._boxes, p) is not None:
                cursor = Qt.CursorShape.SizeAllCursor
            elif self._editable and self._inside_image(p):
                cursor = Qt.CursorShape.CrossCursor
        self.viewport().setCursor(cursor)

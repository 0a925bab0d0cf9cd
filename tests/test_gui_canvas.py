"""The canvas alone, driven with the mouse and keys: drawing, selecting, moving, resizing, zoom, proposals."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QImage, QWheelEvent
from PySide6.QtTest import QTest
from test_gui_support import LEFT, NOMOD, click, drag

from widgets.box_item import PROPOSAL, BoxSpec
from widgets.canvas import Canvas


def solid(w: int, h: int, color=(90, 90, 90)) -> QImage:
    img = QImage(w, h, QImage.Format.Format_RGB32)
    img.fill(QColor(*color))
    return img


@pytest.fixture
def canvas(qtbot):
    c = Canvas()
    qtbot.addWidget(c)
    c.resize(800, 600)
    c.show()
    qtbot.waitExposed(c)
    c.set_image([solid(400, 300)])
    return c


def test_drawing_emits_a_snapped_box_clamped_to_the_image(canvas, qtbot):
    with qtbot.waitSignal(canvas.box_drawn) as sig:
        drag(canvas, (10.2, 20.4), (120.7, 90.1))
    assert sig.args[0] == (10.0, 20.0, 121.0, 90.0)
    with qtbot.waitSignal(canvas.box_drawn) as sig:  # dragged past the bottom-right corner
        drag(canvas, (300, 200), (480, 390))
    assert sig.args[0] == (300.0, 200.0, 400.0, 300.0)
    with qtbot.waitSignal(canvas.box_drawn) as sig:  # dragged up-left: corners come out ordered
        drag(canvas, (50, 60), (20, 30))
    assert sig.args[0] == (20.0, 30.0, 50.0, 60.0)


def test_a_click_is_not_a_box(canvas, qtbot):
    with qtbot.assertNotEmitted(canvas.box_drawn):
        drag(canvas, (100, 100), (101, 100))
        click(canvas, (200, 200))


def test_select_move_and_resize_emit_the_new_boxes(canvas, qtbot):
    canvas.set_annotations([BoxSpec(1, "Car", "#4363d8", (100, 100, 200, 150))])
    with qtbot.waitSignal(canvas.selection_changed) as sig:
        click(canvas, (150, 120))
    assert sig.args[0] == [1] and canvas.selected_ids() == [1]
    with qtbot.waitSignal(canvas.boxes_changed) as sig:
        drag(canvas, (150, 120), (170, 110))
    assert sig.args[0] == {1: (120.0, 90.0, 220.0, 140.0)}
    with qtbot.waitSignal(canvas.boxes_changed) as sig:  # bottom-right handle
        drag(canvas, (220, 140), (260, 180))
    assert sig.args[0] == {1: (120.0, 90.0, 260.0, 180.0)}
    with qtbot.waitSignal(canvas.boxes_changed) as sig:  # moved far past the border: stops at it
        drag(canvas, (150, 120), (900, 120))
    assert sig.args[0] == {1: (260.0, 90.0, 400.0, 180.0)}


def test_nested_boxes_pick_the_smallest_and_ctrl_click_adds(canvas):
    canvas.set_annotations([BoxSpec(1, "Bus", "#911eb4", (50, 50, 350, 250)),
                            BoxSpec(2, "Human", "#e6194b", (100, 100, 130, 180))])
    click(canvas, (110, 150))
    assert canvas.selected_ids() == [2]
    click(canvas, (300, 200), Qt.KeyboardModifier.ControlModifier)
    assert canvas.selected_ids() == [1, 2]
    click(canvas, (10, 10))  # empty image: clears the selection
    assert canvas.selected_ids() == []


def test_nudge_moves_selected_boxes_and_stops_at_the_border(canvas, qtbot):
    canvas.set_annotations([BoxSpec(1, "Car", "#4363d8", (0, 10, 20, 30))])
    canvas.select([1])
    with qtbot.waitSignal(canvas.boxes_nudged) as sig:
        canvas.nudge(5, -3)
    assert sig.args[0] == {1: (5.0, 7.0, 25.0, 27.0)}
    with qtbot.waitSignal(canvas.boxes_nudged) as sig:
        canvas.nudge(-10, 0)
    assert sig.args[0] == {1: (0.0, 7.0, 20.0, 27.0)}
    with qtbot.assertNotEmitted(canvas.boxes_nudged):
        canvas.nudge(-1, 0)


def test_escape_cancels_a_move_in_progress(canvas, qtbot):
    canvas.set_annotations([BoxSpec(1, "Car", "#4363d8", (100, 100, 200, 150))])
    click(canvas, (150, 120))
    vp = canvas.viewport()
    QTest.mousePress(vp, LEFT, NOMOD, canvas.to_view(150, 120))
    QTest.mouseMove(vp, canvas.to_view(190, 160))
    assert canvas.annotation_boxes()[1] == (140.0, 140.0, 240.0, 190.0)
    assert canvas.cancel_gesture()
    assert canvas.annotation_boxes()[1] == (100.0, 100.0, 200.0, 150.0)
    with qtbot.assertNotEmitted(canvas.boxes_changed):
        QTest.mouseRelease(vp, LEFT, NOMOD, canvas.to_view(190, 160))


def test_wheel_zooms_at_the_cursor(canvas, qtbot):
    before = canvas.scale_factor()
    at = canvas.to_view(300, 80)
    under = canvas.mapToScene(at)
    for _ in range(3):
        ev = QWheelEvent(QPointF(at), QPointF(canvas.viewport().mapToGlobal(at)), QPoint(0, 0), QPoint(0, 120),
                         Qt.MouseButton.NoButton, NOMOD, Qt.ScrollPhase.NoScrollPhase, False)
        canvas.wheelEvent(ev)
    assert canvas.scale_factor() == pytest.approx(before * 1.0015 ** 360)
    after = canvas.mapToScene(at)
    assert abs(after.x() - under.x()) < 2 / canvas.scale_factor() + 1e-6
    assert abs(after.y() - under.y()) < 2 / canvas.scale_factor() + 1e-6
    canvas.fit()
    assert canvas.scale_factor() == pytest.approx(before)


def test_middle_drag_and_space_drag_pan_without_drawing(canvas, qtbot):
    canvas.zoom_by(4.0)
    center = canvas.mapToScene(canvas.viewport().rect().center())
    with qtbot.assertNotEmitted(canvas.box_drawn):
        drag(canvas, (200, 150), (210, 150), button=Qt.MouseButton.MiddleButton)
    moved = canvas.mapToScene(canvas.viewport().rect().center())
    assert moved.x() < center.x() - 5  # the picture followed the mouse to the right
    QTest.keyPress(canvas, Qt.Key.Key_Space)
    with qtbot.assertNotEmitted(canvas.box_drawn):
        drag(canvas, (200, 150), (200, 160))
    QTest.keyRelease(canvas, Qt.Key.Key_Space)
    assert canvas.mapToScene(canvas.viewport().rect().center()).y() < moved.y() - 5


def test_high_zoom_is_pixel_exact(qtbot):
    c = Canvas()
    qtbot.addWidget(c)
    c.resize(400, 400)
    c.show()
    qtbot.waitExposed(c)
    checker = QImage(8, 8, QImage.Format.Format_RGB32)
    for y in range(8):
        for x in range(8):
            checker.setPixelColor(x, y, QColor(255, 255, 255) if (x + y) % 2 else QColor(0, 0, 0))
    c.set_image([checker])
    c.zoom_by(32 / c.scale_factor())
    shot = c.viewport().grab().toImage()
    colors = {shot.pixelColor(x, y).name() for y in range(0, shot.height(), 3) for x in range(0, shot.width(), 3)}
    colors.discard(c.backgroundBrush().color().name())
    assert colors <= {"#000000", "#ffffff"}  # nearest-neighbour: no blended pixels at the edges
    assert len(colors) == 2


def test_large_image_paints_from_a_small_level(qtbot):
    c = Canvas()
    qtbot.addWidget(c)
    c.resize(800, 600)
    c.show()
    qtbot.waitExposed(c)
    levels = [solid(4000, 3000), solid(2000, 1500), solid(1000, 750)]
    c.set_image(levels)
    c.viewport().grab()  # renders synchronously
    assert c.picture().last_level == 2  # fit zoom is about 0.2: the 1000 px level is enough
    c.zoom_by(5 / c.scale_factor())
    c.viewport().grab()  # renders synchronously
    assert c.picture().last_level == 0


def test_proposals_are_dashed_with_a_score_and_separate_from_annotations(canvas, qtbot):
    canvas.set_annotations([BoxSpec(1, "Car", "#4363d8", (10, 10, 50, 50))])
    canvas.set_proposals([(7, "Bus", "#911eb4", (100, 100, 300, 200), 0.87)])
    item = canvas.box_item(7, proposal=True)
    assert item.style == PROPOSAL and item.tag_text() == "Bus 0.87"
    assert canvas.annotation_boxes() == {1: (10, 10, 50, 50)}
    assert canvas.proposal_boxes() == {7: (100, 100, 300, 200)}
    with qtbot.waitSignal(canvas.proposal_accepted) as sig:
        QTest.mouseDClick(canvas.viewport(), LEFT, NOMOD, canvas.to_view(200, 150))
    assert sig.args == [7]
    click(canvas, (200, 150))
    assert canvas.selected_proposal_ids() == [7] and canvas.selected_ids() == []
    with qtbot.assertNotEmitted(canvas.boxes_changed):  # proposals are not dragged
        drag(canvas, (200, 150), (220, 170))
    with qtbot.waitSignal(canvas.proposal_rejected) as sig:
        canvas.reject_proposal(7)
    assert sig.args == [7]
    canvas.set_proposals([])
    assert canvas.proposal_boxes() == {} and list(canvas.annotation_boxes()) == [1]


def test_placeholder_shows_boxes_but_cannot_be_drawn_on(canvas, qtbot):
    canvas.set_annotations([BoxSpec(1, "Car", "#4363d8", (10, 10, 50, 50))])
    canvas.set_placeholder(400, 300, "x.jpg: file not found")
    assert not canvas.is_editable() and not canvas.has_image()
    with qtbot.assertNotEmitted(canvas.box_drawn):
        drag(canvas, (100, 100), (200, 200))
    click(canvas, (30, 30))
    assert canvas.selected_ids() == [1]  # selectable, but not movable without its picture
    with qtbot.assertNotEmitted(canvas.boxes_changed), qtbot.assertNotEmitted(canvas.boxes_nudged):
        drag(canvas, (30, 30), (80, 80))
        canvas.nudge(5, 5)
    assert canvas.annotation_boxes() == {1: (10, 10, 50, 50)}
    with pytest.raises(ValueError):
        canvas.set_placeholder(10, 10, "?", kind="oops")


def test_crosshair_and_size_readout_while_drawing(canvas):
    vp = canvas.viewport()
    QTest.mouseMove(vp, canvas.to_view(40, 50))
    vertical, horizontal = canvas._cross
    assert vertical.isVisible() and vertical.line().x1() == pytest.approx(40, abs=1)
    assert horizontal.line().y1() == pytest.approx(50, abs=1)
    QTest.mousePress(vp, LEFT, NOMOD, canvas.to_view(40, 50))
    QTest.mouseMove(vp, canvas.to_view(100, 80))
    assert canvas._readout.isVisible() and canvas._readout.text == "60 × 30"
    QTest.mouseRelease(vp, LEFT, NOMOD, canvas.to_view(100, 80))
    assert not canvas._readout.isVisible()
    QTest.mouseMove(vp, canvas.to_view(380, 320))  # off the image: no crosshair
    assert not vertical.isVisible()


def test_the_middle_of_a_small_box_moves_it_and_its_edges_still_resize(qtbot):
    """A box a few screen pixels across: its handles used to cover its centre, so a drag resized it."""
    from widgets.box_item import HANDLE_PX, BoxItem

    item = BoxItem(BoxSpec(1, "Car", "#ff0000", (0.0, 0.0, 12.0, 10.0)))
    item.setSelected(True)  # handles only answer on a selected box
    item.set_view_scale(1.0)
    assert item.handle_at(QPointF(6.0, 5.0)) is None  # the centre: a move
    assert item.handle_at(QPointF(0.5, 0.5)) == "tl" and item.handle_at(QPointF(6.0, 9.5)) == "b"
    big = BoxItem(BoxSpec(2, "Car", "#ff0000", (0.0, 0.0, 200.0, 100.0)))
    big.setSelected(True)
    big.set_view_scale(1.0)
    assert big.handle_at(QPointF(HANDLE_PX - 1, 50.0)) == "l"  # a large box keeps the full handle size

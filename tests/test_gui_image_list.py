"""The virtual image list stays lazy with 100,000 rows; the session pages real rows into it."""

from __future__ import annotations

from PySide6.QtCore import Qt

from labeler.app.session import LabelingSession
from projects.workspace import Workspace
from widgets.image_list import IMAGE_ID_ROLE, STATUS_ROLE, ImageListPanel, ImageRow


def test_100k_rows_fetch_only_the_pages_shown(qtbot):
    asked = []

    def fetch(offset, limit):
        asked.append(offset)
        return [ImageRow(offset + k + 1, f"img_{offset + k:06d}.jpg", "unlabeled") for k in range(limit)]

    panel = ImageListPanel()
    qtbot.addWidget(panel)
    panel.resize(260, 600)
    panel.show()
    qtbot.waitExposed(panel)
    panel.model.set_source(100_000, fetch)
    qtbot.wait(20)
    assert panel.model.rowCount() == 100_000
    assert 0 in asked and set(asked) <= {0, 99_800}  # the visible page (Qt also peeks at the last row)
    panel.set_current_row(99_999)
    panel.set_current_row(50_000)
    qtbot.wait(20)
    assert set(asked) <= {0, 50_000, 99_800}  # the pages shown, nothing in between
    idx = panel.model.index(99_999)
    assert idx.data() == "100000.  img_099999.jpg" and idx.data(IMAGE_ID_ROLE) == 100_000
    panel.model.update_status(99_999, "submitted")
    assert idx.data(STATUS_ROLE) == "submitted" and "Submitted" in idx.data(Qt.ItemDataRole.ToolTipRole)
    assert panel.model.fetches == len(asked)


def test_filter_choice_is_emitted_and_session_pages_are_real_rows(qtbot, demo_ws):
    panel = ImageListPanel()
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.filter_changed) as sig:
        panel.filter.setCurrentIndex(panel.filter.findData("submitted"))
    assert sig.args == ["submitted"]
    with Workspace.open(demo_ws) as ws:
        s = LabelingSession(ws, "B")
        panel.model.set_source(len(s.queue), s.page)
        rows = [panel.model.row(r) for r in range(panel.model.rowCount())]
        assert [r.image_id for r in rows] == ws.image_ids("B")
        assert [r.status for r in rows] == [ws.image(i)["status"] for i in ws.image_ids("B")]

"""The session and the small Workspace queries it uses (counts, pages, next image with a status)."""

from __future__ import annotations

import pytest

from labeler.app.session import LabelingSession
from projects.imaging import write_image
from projects.synthetic import make_scene
from projects.taxonomy import CustomerTaxonomy, Label
from projects.workspace import Workspace, WorkspaceError


def test_status_counts_and_pages_match_the_store(demo_ws):
    with Workspace.open(demo_ws) as ws:
        stats = {p["name"]: p["status"] for p in ws.stats()["projects"]}
        for name in ws.project_names():
            assert ws.status_counts(name) == stats[name]
        ids = ws.image_ids("B")
        rows = ws.image_rows([ids[3], ids[0], 10**9, ids[1]])  # given order; unknown ids left out
        assert [r["id"] for r in rows] == [ids[3], ids[0], ids[1]]
        assert set(rows[0]) == {"id", "path", "status", "width", "height"}
        assert ws.image_rows([]) == []


def test_next_image_with_status_wraps_around(demo_ws):
    with Workspace.open(demo_ws) as ws:
        unl = ws.image_ids("B", "unlabeled")
        assert unl, "the demo leaves some images unlabeled"
        assert ws.next_image_with_status("B", "unlabeled", unl[0]) == (unl[1] if len(unl) > 1 else unl[0])
        assert ws.next_image_with_status("B", "unlabeled", unl[-1]) == unl[0]
        assert ws.next_image_with_status("B", "in_progress", -1) is None
        with pytest.raises(WorkspaceError, match="unknown status"):
            ws.next_image_with_status("B", "done", 0)


def test_session_edges_empty_project_no_labels_and_clamping(ws: Workspace, tmp_path, qapp):
    with pytest.raises(WorkspaceError, match="no projects"):
        LabelingSession(ws)
    ws.add_project("Empty")
    ws.add_project("P", CustomerTaxonomy([Label("Human", "person")]))
    messages = []
    s = LabelingSession(ws, "Empty")
    s.message.connect(messages.append)
    assert s.image is None and s.queue == []
    s.next()
    s.submit_and_next()  # nothing to do, nothing raised
    write_image(tmp_path / "a.png", make_scene(0, size=(200, 100)).image)
    ws.add_images("Empty", [tmp_path / "a.png"])
    s.open_project("Empty")
    assert s.add_box((1, 1, 10, 10)) is None and "no labels" in messages[-1]
    ws.add_images("P", [tmp_path / "a.png"])
    s.open_project("P")
    aid = s.add_box((-20, 50, 300, 10))  # out of the image and upside down
    a = ws.annotation(aid)
    assert (a["x1"], a["y1"], a["x2"], a["y2"]) == (0, 10, 200, 50)
    with pytest.raises(WorkspaceError, match="no project named"):
        s.open_project("Nope")


def test_filter_keeps_the_current_image_when_it_still_matches(demo_ws, qapp):
    with Workspace.open(demo_ws) as ws:
        s = LabelingSession(ws, "B")
        target = ws.image_ids("B", "submitted")[2]
        s.go_to_image(target)
        s.set_filter("submitted")
        assert s.image["id"] == target and s.queue == ws.image_ids("B", "submitted")
        s.set_filter("unlabeled")
        assert s.image["id"] == s.queue[0] and s.image["status"] == "unlabeled"
        s.next_unlabeled()
        assert s.image["status"] == "unlabeled"

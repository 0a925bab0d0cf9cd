"""The window of an annotator of a team (`labeler open WS --user U`), on both backends, offscreen: it works
through the images claimed for them, renews the lease of the image on screen, gives it back on submit and on
close, refuses a stale edit with a message and shows the image as it now is, keeps undo working, and shows the
other annotators' progress."""

from __future__ import annotations

import pytest
from test_gui_support import drag

from labeler.app.window_runner import build_window, open_session
from projects.imaging import write_image
from projects.synthetic import make_scene
from projects.taxonomy import CustomerTaxonomy, Label


@pytest.fixture
def team(store, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELER_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setenv("LABELER_AUTHOR", "alice")
    monkeypatch.setattr("labeler.app.team.POLL_S", {"sqlite": 0.5, "postgresql": 15.0})  # SQLite polls: keep it short
    with store.create() as ws:
        ws.add_project("P", CustomerTaxonomy([Label("Human", "person"), Label("Car", "car")]))
        folder = store.image_root / "batch"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for k in range(3):
            paths.append(folder / f"{k}.jpg")
            write_image(paths[-1], make_scene(k).image)
        ids = ws.add_images("P", paths).added
    return store, ids


def _window(qtbot, store, lease_s: float):
    session = open_session(store.target, "P", user="alice", lease_s=lease_s)
    w = build_window(session, prelabels=False, lint=False, trainer=False)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    qtbot.waitUntil(lambda: w.session.image is not None and w.ready_image_id == w.session.image["id"],
                    timeout=10000)
    return w


def test_the_window_claims_renews_and_gives_back(qtbot, team):
    store, ids = team
    other = store.open()  # bob, on another machine
    w = _window(qtbot, store, lease_s=3.0)
    try:
        s = w.session
        assert s.user == "alice" and s.queue == [ids[0]] and s.image["id"] == ids[0]
        (held,) = other.leases("P")
        assert (held.image_id, held.holder) == (ids[0], "alice")
        qtbot.waitUntil(lambda: other.holder(ids[0]).expires_at > held.expires_at, timeout=10000)  # the renew timer
        (bob,) = other.claim("P", "bob")
        assert bob.image_id == ids[1]  # never the image alice has open
        qtbot.waitUntil(lambda: "bob 0 submitted, 1 held" in w.team.label.text(), timeout=20000)
        assert "you 0 submitted, 1 held" in w.team.label.text()

        drag(w.canvas, (20, 30), (90, 120))
        assert len(other.annotations(ids[0])) == 1
        assert w.submit() is None
        assert other.image(ids[0])["status"] == "submitted" and other.image(ids[0])["submitted_by"] == "alice"
        assert s.image["id"] == ids[2]  # the next claimed image: ids[1] is bob's
        assert {lease.image_id: lease.holder for lease in other.leases("P")} == {ids[1]: "bob", ids[2]: "alice"}
        qtbot.waitUntil(lambda: "you 1 submitted, 1 held" in w.team.label.text(), timeout=20000)

        w.close()  # closing gives back what the window holds
        assert {lease.image_id: lease.holder for lease in other.leases("P")} == {ids[1]: "bob"}
    finally:
        w.close()
        w.session.ws.close()
        other.close()


def test_a_stale_edit_is_refused_shown_and_undo_still_works(qtbot, team):
    store, ids = team
    other = store.open()
    w = _window(qtbot, store, lease_s=600)
    try:
        s = w.session
        drag(w.canvas, (20, 30), (90, 120))
        (mine,) = s.annotations
        # bob (an admin fixing boxes, or a window that kept the image past its lease) moves the box meanwhile
        other.update_annotation(mine["id"], box=(200, 200, 260, 260), version=mine["version"], user="bob")
        s.change_boxes({mine["id"]: (25, 35, 95, 125)})  # alice's edit was made on the old box
        assert "was changed by bob" in w.last_error and "shown again as it is now" in w.last_error
        row = other.annotation(mine["id"])
        assert (row["x1"], row["updated_by"]) == (200.0, "bob")  # bob's box is not overwritten
        assert (s.annotations[0]["x1"], s.annotations[0]["version"]) == (200.0, row["version"])  # reloaded
        assert w.canvas.annotation_boxes()[mine["id"]] == (200, 200, 260, 260)

        s.undo()  # the drawing: it was made before bob's edit, so undoing it would remove bob's box: refused
        assert other.annotation(mine["id"])["deleted_at"] is None and "changed by bob" in w.last_error

        s.change_boxes({mine["id"]: (210, 210, 270, 270)})  # an edit on the box as shown now is fine
        assert other.annotation(mine["id"])["x1"] == 210.0
        s.undo()
        assert other.annotation(mine["id"])["x1"] == 200.0
        s.redo()
        assert other.annotation(mine["id"])["x1"] == 210.0
        s.delete([mine["id"]])
        s.undo()
        assert other.annotation(mine["id"])["deleted_at"] is None
    finally:
        w.close()
        w.session.ws.close()
        other.close()


def test_going_back_to_an_image_another_annotator_took_is_refused(qtbot, team):
    store, ids = team
    other = store.open()
    w = _window(qtbot, store, lease_s=600)
    try:
        s = w.session
        s.next_unlabeled()  # claims the next image: alice now has two in her list
        assert s.queue == ids[:2] and s.image["id"] == ids[1]
        other.release_leases([ids[0]], "alice")  # as if her lease on the first had run out...
        other.claim("P", "bob")  # ...and bob got it
        s.previous()
        assert s.image["id"] == ids[1] and s.queue == [ids[1]]
        assert w.statusBar().currentMessage().startswith(f"image {ids[0]} ")
        assert "held by bob" in w.statusBar().currentMessage()
    finally:
        w.close()
        w.session.ws.close()
        other.close()

"""The workspace store: schema, errors for files that are not workspaces, one transaction per edit."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from projects.imaging import write_image
from projects.schema import SCHEMA_VERSION
from projects.split import split_bucket, split_of
from projects.synthetic import make_scene
from projects.taxonomy import CustomerTaxonomy, Label, TaxonomyError
from projects.workspace import Workspace, WorkspaceError


@pytest.fixture
def ws(store):
    """Every test here that takes `ws` runs on SQLite and on PostgreSQL (tests/conftest.py `store`)."""
    w = store.create()
    yield w
    w.close()


def test_new_workspace_is_wal_with_foreign_keys(tmp_path):
    with Workspace.create(tmp_path / "w") as w:
        assert w.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert w.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_new_workspace_has_the_schema_and_enforces_foreign_keys(ws):
    assert ws.schema_version == SCHEMA_VERSION
    assert ws.super_taxonomy().names[:2] == ["vehicle", "car"]
    integrity = (sqlite3.IntegrityError, *([psycopg.IntegrityError] if ws.is_team else []))
    with pytest.raises(integrity):
        ws.db.execute("INSERT INTO labels(project_id, name, node_id, position) VALUES (999, 'x', 1, 0)")


def test_open_refuses_what_is_not_a_workspace(tmp_path):
    with pytest.raises(WorkspaceError, match="no labeler.sqlite"):
        Workspace.open(tmp_path)
    (tmp_path / "labeler.sqlite").write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(WorkspaceError, match="not a Labeler workspace"):
        Workspace.open(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    con = sqlite3.connect(other / "labeler.sqlite")
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    with pytest.raises(WorkspaceError, match="not a Labeler workspace"):
        Workspace.open(other)


def test_open_refuses_newer_schema_and_migrates_older(tmp_path):
    Workspace.create(tmp_path / "w").close()
    con = sqlite3.connect(tmp_path / "w" / "labeler.sqlite")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(WorkspaceError, match="newer than this Labeler"):
        Workspace.open(tmp_path / "w")


def test_forward_migration_runs_on_open(tmp_path, monkeypatch):
    from projects import schema, workspace

    Workspace.create(tmp_path / "w").close()

    def v2(db):
        db["images"].add_column("is_gold", int, not_null_default=0)

    monkeypatch.setattr(workspace, "MIGRATIONS", [*schema.MIGRATIONS, v2])
    monkeypatch.setattr(workspace, "SCHEMA_VERSION", len(schema.MIGRATIONS) + 1)
    with Workspace.open(tmp_path / "w") as w:
        assert w.schema_version == len(schema.MIGRATIONS) + 1
        assert "is_gold" in w.db["images"].columns_dict


def test_project_with_bad_taxonomy_writes_nothing(ws):
    with pytest.raises(TaxonomyError, match="unknown node 'robot'"):
        ws.add_project("X", CustomerTaxonomy([Label("Human", "person"), Label("Robot", "robot")]))
    assert ws.project_names() == []
    ws.add_project("X", CustomerTaxonomy([Label("Human", "person")]))
    with pytest.raises(WorkspaceError, match="already exists"):
        ws.add_project("X")
    with pytest.raises(WorkspaceError, match=r"no project named 'Y' \(projects: X\)"):
        ws.labels("Y")


def _image(folder, seed=0):
    p = folder / f"img{seed}.jpg"
    write_image(p, make_scene(seed).image)
    return p


def test_images_inside_are_relative_and_corrupt_ones_are_skipped(ws, tmp_path):
    ws.add_project("P")
    inside = ws.folder / "imgs"
    inside.mkdir()
    good = _image(inside, 1)
    outside = _image(tmp_path, 2)
    bad = inside / "broken.jpg"
    bad.write_bytes(good.read_bytes()[:200])
    res = ws.add_images("P", [inside, outside, tmp_path / "missing.png"])
    assert any("broken.jpg" in s and "corrupt" in s for s in res.skipped)
    assert any("missing.png" in s and "not found" in s for s in res.skipped)
    rows = [ws.image(i) for i in res.added]
    if ws.is_team:  # a team workspace's images lie under its image root, where every annotator reaches them
        assert len(res.added) == 1 and {r["path"] for r in rows} == {"imgs/img1.jpg"}
        assert any("img2.jpg" in s and "outside the image root" in s for s in res.skipped)
    else:
        assert len(res.added) == 2
        assert {r["path"] for r in rows} == {"imgs/img1.jpg", str(outside.resolve())}
    assert rows[0]["width"] == 512 and rows[0]["height"] == 320 and rows[0]["status"] == "unlabeled"
    assert rows[0]["split_bucket"] == split_bucket(rows[0]["sha256"])
    assert ws.image_path(rows[0]["path"]) == good.resolve()
    again = ws.add_images("P", [good])
    assert again.added == [] and "already in the project" in again.skipped[0]


def test_annotation_edits_soft_delete_and_status(ws, tmp_path):
    ws.add_project("P", CustomerTaxonomy([Label("Human", "person"), Label("Car", "car")]))
    (img,) = ws.add_images("P", [_image(ws.folder)]).added
    human, car = (lab["id"] for lab in ws.labels("P"))
    aid = ws.add_annotation(img, human, (10, 20, 30, 60), author="ann")
    row = ws.annotations(img)[0]
    assert (row["label"], row["node"], row["provenance"], row["author"]) == ("Human", "person", "manual", "ann")
    assert ws.image(img)["status"] == "in_progress"
    ws.update_annotation(aid, box=(11, 21, 31, 61), label_id=car)
    row = ws.annotations(img)[0]
    assert (row["x1"], row["y2"], row["label"]) == (11, 61, "Car") and row["updated_at"] >= row["created_at"]
    ws.delete_annotation(aid)
    assert ws.annotations(img) == [] and ws.annotations(img, include_deleted=True)[0]["deleted_at"]
    ws.restore_annotation(aid)
    assert len(ws.annotations(img)) == 1
    ws.set_status(img, "submitted")
    assert ws.image_ids("P", "submitted") == [img]
    for bad in [(5, 5, 1, 1), (float("nan"), 0, 1, 1), (0, 0, 1)]:
        with pytest.raises(WorkspaceError):
            ws.add_annotation(img, human, bad)
    with pytest.raises(WorkspaceError, match="provenance"):
        ws.add_annotation(img, human, (0, 0, 1, 1), provenance="guess")
    assert len(ws.annotations(img)) == 1


def test_predictions_are_cached_per_model(ws, tmp_path):
    ws.add_project("P")
    (img,) = ws.add_images("P", [_image(ws.folder)]).added
    mid = ws.register_model("v1", "models/v1")
    assert ws.predictions(img, mid) is None
    ws.save_predictions(img, mid, [])
    assert ws.predictions(img, mid) == []  # predicted, found nothing: never predicted again
    ws.save_predictions(img, mid, [("car", (1, 2, 3, 4), 0.5), ("person", (5, 6, 7, 8), 0.9)])
    assert [p["node"] for p in ws.predictions(img, mid)] == ["person", "car"]
    with pytest.raises(WorkspaceError, match="already registered"):
        ws.register_model("v1", "x")


def test_split_bucket_is_stable_and_spread():
    import hashlib

    buckets = [split_bucket(hashlib.sha256(str(i).encode()).hexdigest()) for i in range(2000)]
    assert buckets[:3] == [split_bucket(hashlib.sha256(str(i).encode()).hexdigest()) for i in range(3)]
    shares = {s: sum(split_of(b) == s for b in buckets) / 2000 for s in ("train", "val", "test")}
    assert 0.76 < shares["train"] < 0.84 and 0.07 < shares["val"] < 0.13 and 0.07 < shares["test"] < 0.13
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(500)]
    assert sum(split_bucket(h, salt="v2") != split_bucket(h) for h in hashes) > 450  # the salt reshuffles

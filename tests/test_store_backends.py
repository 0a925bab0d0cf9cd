"""A team workspace on PostgreSQL: opened by URL, errors in one line without a password, the image root, the same
schema as SQLite, forward migrations, and the CLI from `labeler init URL --image-root` to `export`.

Runs against a real server that the tests start themselves (tests/pg_server.py, the `pg_server` fixture).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from projects.imaging import ImageError, write_image
from projects.schema import SCHEMA_VERSION
from projects.store.pg_schema import PG_MIGRATIONS
from projects.synthetic import make_scene
from projects.taxonomy import CustomerTaxonomy, Label
from projects.workspace import Workspace, WorkspaceError


@pytest.fixture
def pg(pg_server):
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


def _image(folder, seed=0, name=None):
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / (name or f"img{seed}.jpg")
    write_image(p, make_scene(seed).image)
    return p


def test_a_team_workspace_is_created_and_opened_by_url(pg, tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    with Workspace.create(pg, image_root=root) as ws:
        assert ws.is_team and ws.location == pg and ws.folder == root.resolve() and ws.name == pg.rsplit("/", 1)[1]
        ws.add_project("P", CustomerTaxonomy([Label("Human", "person")]))
        (img,) = ws.add_images("P", [_image(root / "a")]).added
        ws.add_annotation(img, ws.labels("P")[0]["id"], (1, 2, 30, 40), author="ann")
    with Workspace.open(pg) as ws:  # a second process, another day: everything is there
        assert ws.schema_version == SCHEMA_VERSION and ws.project_names() == ["P"]
        (row,) = ws.annotations(img)
        assert (row["x1"], row["y2"], row["author"], row["label"]) == (1.0, 40.0, "ann", "Human")
        assert ws.stats()["workspace"] == pg
    with pytest.raises(WorkspaceError, match="a workspace already exists here"):
        Workspace.create(pg, image_root=root)


def test_wrong_urls_are_one_line_naming_the_url_without_its_password(pg_server, pg, tmp_path, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "pw-from-the-environment")
    cases = {
        pg_server.url(pg.rsplit("/", 1)[1]).replace("labeler@", "labeler:s3cret@"): "password in the URL is refused",
        f"postgresql://labeler@127.0.0.1:{pg_server.port}/no_such_db": "cannot connect",
        "postgresql://labeler@127.0.0.1:1/labeler": "cannot connect",
        "postgresql://labeler@127.0.0.1:notaport/x": "not a PostgreSQL URL",
        "postgresql://127.0.0.1": "names no database",
        pg: "an empty database",
    }
    for url, message in cases.items():
        with pytest.raises(WorkspaceError) as info:
            Workspace.open(url)
        text = str(info.value)
        assert message in text and "\n" not in text, text
        assert "s3cret" not in text and "pw-from-the-environment" not in text
        assert text.startswith(url.replace(":s3cret@", ":***@"))
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:  # someone else's database
        conn.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(WorkspaceError, match="not a Labeler workspace .the database holds 1 other tables"):
        Workspace.open(pg)
    with pytest.raises(WorkspaceError, match="needs an empty database"):
        Workspace.create(pg, image_root=tmp_path)
    with pytest.raises(WorkspaceError, match="needs an image root"):
        Workspace.create(pg)


def test_the_cli_says_a_wrong_url_in_one_line(pg_server, capsys):
    from labeler.cli import main

    url = f"postgresql://labeler:s3cret@127.0.0.1:{pg_server.port}/no_such_db"
    assert main(["stats", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "s3cret" not in err and "postgresql://labeler:***@" in err
    assert main(["stats", url.replace(":s3cret", "")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot connect" in err and "no_such_db" in err


def test_image_root_relative_paths_and_content_hash(pg, tmp_path, monkeypatch):
    root = tmp_path / "shared"
    outside = _image(tmp_path / "desk", 3)
    inside = _image(root / "batch1", 1)
    ws = Workspace.create(pg, image_root=root)
    ws.add_project("P")
    res = ws.add_images("P", [inside, outside])
    assert len(res.added) == 1 and "outside the image root" in res.skipped[0] and "desk" in res.skipped[0]
    (img,) = res.added
    assert ws.image(img)["path"] == "batch1/img1.jpg"
    assert ws.verify_image(img) == inside.resolve()
    write_image(inside, make_scene(9).image)  # replaced on the shared storage under the same name
    with pytest.raises(ImageError, match="changed since it was added"):
        ws.verify_image(img)
    ws.close()
    # another machine mounts the shared storage elsewhere: the same rows resolve under its mount
    moved = tmp_path / "mnt" / "shared"
    moved.parent.mkdir()
    root.rename(moved)
    monkeypatch.setenv("LABELER_IMAGE_ROOT", str(moved))
    with Workspace.open(pg) as ws:
        assert ws.image_path(ws.image(img)["path"]) == moved / "batch1" / "img1.jpg"
        assert hashlib.sha256((moved / "batch1" / "img1.jpg").read_bytes()).hexdigest() != ws.image(img)["sha256"]


def test_a_folder_workspace_refuses_an_image_root(tmp_path):
    with pytest.raises(WorkspaceError, match="image root is for a PostgreSQL workspace"):
        Workspace.create(tmp_path / "w", image_root=tmp_path)


def _schema_sqlite(ws) -> dict:
    out = {}
    for (table,) in ws.db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
        cols = {r[1]: bool(r[3] or r[5]) for r in ws.db.execute(f"PRAGMA table_info({table})")}
        fks = {(r[3], r[2], r[4]) for r in ws.db.execute(f"PRAGMA foreign_key_list({table})")}
        idx = {r[1]: bool(r[2]) for r in ws.db.execute(f"PRAGMA index_list({table})") if r[3] == "c"}
        out[table] = (cols, fks, idx)
    return out


def _schema_pg(ws) -> dict:
    out = {}
    for table in ws.db.table_names():
        cols = {c: n == "NO" for c, n in ws.db.execute(
            "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ?", [table])}
        fks = set(ws.db.execute(
            "SELECT a.attname, c.confrelid::regclass::text, af.attname FROM pg_constraint c "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
            "JOIN pg_attribute af ON af.attrelid = c.confrelid AND af.attnum = c.confkey[1] "
            "WHERE c.contype = 'f' AND c.conrelid = ?::regclass", [table]).fetchall())
        idx = {name: unique for name, unique in ws.db.execute(
            "SELECT i.relname, x.indisunique FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "WHERE x.indrelid = ?::regclass AND NOT x.indisprimary", [table])}
        out[table] = (cols, fks, idx)
    return out


def test_postgres_has_the_sqlite_schema(pg, tmp_path):
    """Tables, columns and NOT NULL, foreign keys, named indexes and their uniqueness: the same on both."""
    assert len(PG_MIGRATIONS) == SCHEMA_VERSION
    with Workspace.create(tmp_path / "w") as lite, Workspace.create(pg, image_root=tmp_path) as team:
        a, b = _schema_sqlite(lite), _schema_pg(team)
    assert sorted(a) == sorted(b)
    for table in a:
        assert a[table] == b[table], table


def test_a_forward_migration_is_applied_on_postgres(pg, tmp_path, monkeypatch):
    from projects import workspace

    with Workspace.create(pg, image_root=tmp_path) as ws:
        ws.add_project("P")

    def v_next(db):
        db.execute("ALTER TABLE images ADD COLUMN is_gold BIGINT NOT NULL DEFAULT 0")

    monkeypatch.setattr(workspace, "PG_MIGRATIONS", [*PG_MIGRATIONS, v_next])
    monkeypatch.setattr(workspace, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with Workspace.open(pg) as ws:
        assert ws.schema_version == SCHEMA_VERSION + 1 and ws.project_names() == ["P"]
        assert "is_gold" in ws.db["images"].columns_dict
    with Workspace.open(pg) as ws:  # applied once
        assert ws.schema_version == SCHEMA_VERSION + 1
    monkeypatch.setattr(workspace, "SCHEMA_VERSION", SCHEMA_VERSION)
    with pytest.raises(WorkspaceError, match="newer than this Labeler"):
        Workspace.open(pg)


def test_a_failed_migration_leaves_the_version_and_the_tables_as_they_were(pg, tmp_path, monkeypatch):
    from projects import workspace

    Workspace.create(pg, image_root=tmp_path).close()

    def broken(db):
        db.execute("CREATE TABLE half_done (id BIGINT)")
        raise RuntimeError("a bug in a migration")

    monkeypatch.setattr(workspace, "PG_MIGRATIONS", [*PG_MIGRATIONS, broken])
    monkeypatch.setattr(workspace, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError):
        Workspace.open(pg)
    monkeypatch.setattr(workspace, "SCHEMA_VERSION", SCHEMA_VERSION)
    with Workspace.open(pg) as ws:
        assert ws.schema_version == SCHEMA_VERSION and "half_done" not in ws.db.table_names()


def test_nested_transactions_are_savepoints_and_all_or_nothing(store):
    ws = store.create()
    try:
        with pytest.raises(WorkspaceError):
            with ws.transaction():
                ws.add_project("A")
                with pytest.raises(WorkspaceError, match="already exists"), ws.transaction():
                    ws.add_project("A")
                ws.add_project("B")
                raise WorkspaceError("the caller gives up")
        assert ws.project_names() == []
        with ws.transaction():
            ws.add_project("A")
            try:
                with ws.transaction():
                    ws.add_project("C")
                    raise ValueError("inner only")
            except ValueError:
                pass
        assert ws.project_names() == ["A"]
    finally:
        ws.close()


def test_the_cli_round_trip_on_a_team_workspace(pg, tmp_path, capsys):
    from labeler.cli import main

    root = tmp_path / "shared"
    root.mkdir()
    for seed in range(3):
        _image(root / "batch", seed)
    tax = tmp_path / "tax.yaml"
    tax.write_text("labels:\n  - {name: Human, node: person}\n  - {name: Car, node: car}\n")
    assert main(["init", pg, "--image-root", str(root)]) == 0
    assert f"created workspace {pg} (image root {root.resolve()})" in capsys.readouterr().out
    assert main(["project", "add", pg, "P", "--taxonomy", str(tax)]) == 0
    assert main(["images", "add", pg, "--project", "P", str(root / "batch")]) == 0
    assert "added 3 images" in capsys.readouterr().out
    with Workspace.open(pg) as ws:
        human = ws.labels("P")[0]["id"]
        for i, img in enumerate(ws.image_ids("P")):
            ws.add_annotation(img, human, (10 + i, 20, 60, 90), author="ann")
            ws.set_status(img, "submitted")
    out = tmp_path / "export-coco"  # outside the workspace (the export refuses its own folder)
    assert main(["export", pg, "--project", "P", "--format", "coco", str(out)]) == 0
    assert main(["project", "add", pg, "Q", "--taxonomy", str(tax)]) == 0
    assert main(["import", pg, "--project", "Q", "--format", "coco", str(out), "--images", str(root / "batch")]) == 0
    capsys.readouterr()
    assert main(["stats", pg, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["workspace"] == pg
    assert {p["name"]: (p["images"], p["annotations"], p["status"]["submitted"]) for p in stats["projects"]} == \
        {"P": (3, 3, 3), "Q": (3, 3, 3)}
    with Workspace.open(pg) as ws:
        paths = {ws.image(i)["path"] for i in ws.image_ids("Q")}
        assert all(not p.startswith("/") for p in paths), paths  # relative to the image root
        boxes = sorted((a["x1"], a["y2"]) for i in ws.image_ids("Q") for a in ws.annotations(i))
        assert boxes == [(10.0, 90.0), (11.0, 90.0), (12.0, 90.0)]


def test_sqlite_errors_are_not_swallowed_by_the_postgres_path(tmp_path):
    """A folder whose name merely starts like a URL is still a folder."""
    folder = tmp_path / "postgresql-data"
    with Workspace.create(folder) as ws:
        assert not ws.is_team
    with pytest.raises(WorkspaceError, match="no labeler.sqlite"):
        Workspace.open(tmp_path / "postgres")
    assert sqlite3.sqlite_version_info >= (3, 39)  # IS NOT DISTINCT FROM, the portable NULL-safe equality

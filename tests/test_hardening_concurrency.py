"""Several processes write one workspace at once: every write waits its turn, none fails, none is lost.

Before write transactions began IMMEDIATE, a read-then-write transaction (`bulk_import`, `insert_images`,
`mark_gold`) failed at once with "database is locked" whenever another writer committed in between.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from projects.errors import WorkspaceError
from projects.imaging import write_image
from projects.synthetic import make_scene
from projects.taxonomy import CustomerTaxonomy, Label
from projects.workspace import Workspace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One writer: a mix of read-then-write transactions, each result printed only after it committed.
WRITER = textwrap.dedent("""
    import json, sys
    from projects.workspace import Workspace
    ws = Workspace.open(sys.argv[1])
    who, n, root = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    pid = ws.project_id("P")
    label = ws.labels("P")[0]["id"]
    done = {"annotations": [], "images": [], "errors": []}
    for i in range(n):
        try:
            ids = ws.bulk_import(pid, [{"path": f"{root}/{who}/{i}.png", "sha256": f"{who}-{i}", "width": 64,
                                        "height": 48, "status": "submitted"}],
                                 {"image": [0], "label_id": label, "x1": [1.0], "y1": [2.0], "x2": [30.0],
                                  "y2": [40.0], "provenance": "imported", "author": who, "model_id": None,
                                  "created_at": "t", "updated_at": "t", "deleted_at": None})
            done["images"].append(ids[0])
            aid = ws.add_annotation(ids[0], label, (i, i, i + 5, i + 5), author=who)
            ws.update_annotation(aid, box=(i, i, i + 7, i + 7))
            done["annotations"].append(aid)
        except Exception as e:
            done["errors"].append(f"{type(e).__name__}: {e}")
    print(json.dumps(done))
""")


def make_workspace(folder) -> None:
    with Workspace.create(folder) as ws:
        _projects(ws)


def _projects(ws) -> None:
    ws.add_project("P", CustomerTaxonomy([Label("Human", "person")]))
    ws.add_project("Q", CustomerTaxonomy([Label("Car", "car")]))


def test_writer_processes_never_fail_and_lose_nothing(store):
    """On SQLite and on PostgreSQL (tests/conftest.py `store`)."""
    with store.create() as ws:
        _projects(ws)
    n, writers = 60, 4
    root = "/data" if store.kind == "sqlite" else str(store.image_root.resolve())
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, store.target, f"w{k}", str(n), root],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for k in range(writers)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out))
    assert [r["errors"] for r in results] == [[]] * writers
    with store.open() as ws:
        if not ws.is_team:
            assert ws.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert ws.db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == n * writers
        rows = {r[0]: r for r in ws.db.execute("SELECT id, x1, x2 FROM annotations WHERE provenance='manual'")}
        for r in results:
            assert len(r["annotations"]) == n
            for aid in r["annotations"]:
                assert rows[aid][2] - rows[aid][1] == 7  # the update landed too
        assert ws.db.execute("SELECT COUNT(*) FROM annotations").fetchone()[0] == 2 * n * writers


def test_a_lock_that_outlasts_the_wait_is_one_clear_error(tmp_path, monkeypatch, capsys):
    make_workspace(tmp_path / "ws")
    monkeypatch.setenv("LABELER_BUSY_TIMEOUT", "0.2")
    holder = sqlite3.connect(tmp_path / "ws" / "labeler.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process sits on the write lock
    try:
        with Workspace.open(tmp_path / "ws") as ws, pytest.raises(WorkspaceError, match="busy"):
            ws.add_label("P", "Rider", "cyclist")
        from labeler.cli import main

        code = main(["project", "add", str(tmp_path / "ws"), "R"])
        err = capsys.readouterr().err
        assert code == 2 and "busy" in err and "Traceback" not in err and err.count("\n") == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.project_names() == ["P", "Q"] and [lab["name"] for lab in ws.labels("P")] == ["Human"]


def test_a_writer_that_outlasts_the_wait_on_postgres_is_one_clear_error(pg_server, tmp_path, monkeypatch, capsys):
    """A team workspace: another connection holds the write turn (the advisory lock every write transaction
    takes first, as SQLite's BEGIN IMMEDIATE): the edit waits, then fails in one line; nothing is written."""
    import psycopg

    from projects.store.postgres import WRITE_LOCK

    url = pg_server.create_database()
    with Workspace.create(url, image_root=tmp_path) as ws:
        _projects(ws)
    monkeypatch.setenv("LABELER_BUSY_TIMEOUT", "0.2")
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [WRITE_LOCK])
        with Workspace.open(url) as ws, pytest.raises(WorkspaceError, match="busy"):
            ws.add_label("P", "Rider", "cyclist")
        from labeler.cli import main

        code = main(["project", "add", url, "R"])
        err = capsys.readouterr().err
        assert code == 2 and "busy" in err and "Traceback" not in err and err.count("\n") == 1
    with Workspace.open(url) as ws:
        assert ws.project_names() == ["P", "Q"] and [lab["name"] for lab in ws.labels("P")] == ["Human"]
        ws.add_label("P", "Rider", "cyclist")  # the turn was given back with the connection
    pg_server.drop_database(url)


def test_box_edits_on_postgres_do_not_queue_behind_the_write_turn(pg_server, tmp_path, monkeypatch):
    """Annotators' edits lock only their rows: while another connection holds the workspace's write turn (a
    taxonomy change, an import), adding, moving, deleting and restoring a box still commit at once."""
    import psycopg

    from projects.store.postgres import WRITE_LOCK

    url = pg_server.create_database()
    with Workspace.create(url, image_root=tmp_path) as ws:
        _projects(ws)
        write_image(tmp_path / "a.png", make_scene(0, size=(64, 48)).image)
        image_id = ws.add_images("P", [tmp_path / "a.png"]).added[0]
        label_id = ws.labels("P")[0]["id"]
    monkeypatch.setenv("LABELER_BUSY_TIMEOUT", "0.2")
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [WRITE_LOCK])
        with Workspace.open(url) as ws:
            aid = ws.add_annotation(image_id, label_id, (1, 2, 30, 40))
            version = ws.update_annotation(aid, box=(2, 3, 31, 41), version=1)
            version = ws.delete_annotation(aid, version=version)
            ws.restore_annotation(aid, version=version)
            with pytest.raises(WorkspaceError, match="busy"):  # a taxonomy change still waits its turn
                ws.add_label("P", "Rider", "cyclist")
    with Workspace.open(url) as ws:
        (row,) = ws.annotations(image_id)
        assert (row["x1"], row["version"], ws.image(image_id)["status"]) == (2, 4, "in_progress")
    pg_server.drop_database(url)


def test_two_imports_into_different_projects_at_once(tmp_path):
    """Two `labeler import` processes at once: both succeed (one waited), every box is there once."""
    from test_formats_support import make_source

    make_source(tmp_path / "src").close()
    for fmt in ("coco", "voc"):
        assert subprocess.run([sys.executable, "-m", "labeler", "export", str(tmp_path / "src" / "ws"), "--project",
                               "P", "--format", fmt, str(tmp_path / fmt)], cwd=ROOT).returncode == 0
    make_workspace(tmp_path / "ws")
    procs = [subprocess.Popen([sys.executable, "-m", "labeler", "import", str(tmp_path / "ws"), "--project", project,
                               "--format", fmt, str(tmp_path / fmt), "--add-labels"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for project, fmt in (("P", "coco"), ("Q", "voc"))]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0 and "Traceback" not in err, err[-2000:]
    with Workspace.open(tmp_path / "ws") as ws:
        per_project = {p["name"]: p["annotations"] for p in ws.stats()["projects"]}
        assert per_project == {"P": 6, "Q": 6}


def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path):
    db = tmp_path / "other" / "labeler.sqlite"
    db.parent.mkdir()
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE songs (title TEXT)")
    con.commit()
    con.close()
    before = db.read_bytes()
    with pytest.raises(WorkspaceError, match="not a Labeler workspace"):
        Workspace.open(db.parent)
    assert db.read_bytes() == before  # still in rollback-journal mode: never switched to WAL
    assert sorted(p.name for p in db.parent.iterdir()) == ["labeler.sqlite"]


def test_a_damaged_workspace_is_one_clear_line(tmp_path, capsys):
    make_workspace(tmp_path / "ws")
    with Workspace.open(tmp_path / "ws") as ws:
        ws.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = ws.db.execute("PRAGMA page_size").fetchone()[0]
        pages = ws.db.execute("PRAGMA page_count").fetchone()[0]
    path = tmp_path / "ws" / "labeler.sqlite"
    data = bytearray(path.read_bytes())
    for k in range(2, pages):  # scribble over every page but the first (the header and schema root)
        data[k * page + 8: k * page + 200] = os.urandom(192)
    path.write_bytes(bytes(data))
    from labeler.cli import main

    code = main(["stats", str(tmp_path / "ws")])
    err = capsys.readouterr().err
    assert code == 2 and "damaged" in err and "Traceback" not in err


def test_init_on_a_file_or_under_a_file_is_one_clear_line(tmp_path, capsys):
    from labeler.cli import main

    (tmp_path / "notes.txt").write_text("hello")
    for target in (tmp_path / "notes.txt", tmp_path / "notes.txt" / "ws"):
        code = main(["init", str(target)])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and "notes.txt" in err
    assert (tmp_path / "notes.txt").read_text() == "hello"

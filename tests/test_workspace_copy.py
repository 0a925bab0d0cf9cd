"""`labeler workspace copy`: SQLite → PostgreSQL and back with every row and id, image paths rewritten (or the
files copied), verified; a refused or interrupted copy (exception, Ctrl-C, SIGKILL) leaves DST unchanged.

Runs against the real throwaway server of tests/pg_server.py (the `pg_server` fixture)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from labeler.cli import main
from projects import trainer_status
from projects.imaging import ImageError
from projects.workspace import Workspace, WorkspaceError
from projects.workspace_copy import LOCAL_META, copy_workspace

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pg(pg_server):
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def rich(demo_ws, tmp_path):
    """A folder workspace with a row in every table: the demo's projects, images and annotations, plus a model,
    its predictions and pre-label decisions, lint findings, a gold image with a quality score, a trainer run with
    a checkpoint, a soft-deleted box and gaps in the ids."""
    folder = tmp_path / "src"
    shutil.copytree(demo_ws, folder)
    with Workspace.open(folder) as ws:
        (folder / "models" / "v1").mkdir(parents=True)
        mid = ws.register_model("v1", folder / "models" / "v1", {"arch": "demo"}, {"map": 0.5}, sha256="ab" * 32)
        img = ws.image_ids("A")[0]
        ws.save_predictions(img, mid, [("car", (1, 2, 30, 40), 0.9), ("person", (5, 5, 9, 9), 0.4)])
        ids = ws.add_proposal_decisions(img, mid, [("car", (1, 2, 30, 40)), ("person", (5, 5, 9, 9))], "accepted")
        ws.remove_proposal_decisions(ids[:1])  # a gap in the ids
        label = ws.labels("A")[0]["id"]
        aid = ws.add_annotation(img, label, (1.25, 2.5, 30.125, 40), provenance="prelabel_accepted", model_id=mid)
        ws.delete_annotation(ws.add_annotation(img, label, (3, 3, 8, 8)))
        ws.replace_lint_findings(img, mid, [{"kind": "wrong_class", "score": 0.7, "box": (1, 2, 30, 40),
                                            "message": "maybe a truck", "annotation_id": aid}], 0.7)
        gold = ws.image_ids("A", "submitted")[0]
        ws.mark_gold(gold, author="lead")
        ws.add_quality_score(gold, "ann", 1.0, 0.5, 0.8, 1, 0, 1)
        run = trainer_status.start_run(ws, str(folder / "follow"), {"lr": 1e-4})
        trainer_status.add_checkpoint(ws, run, decision="registered", version="v1", metric="map", candidate=0.5)
        ws.claim("A", "ann", n=2)  # leases: one held, one given back
        ws.release_leases([ws.leases("A", "ann")[0].image_id], "ann")
    return folder


def dump(target) -> dict[str, list[dict]]:
    """Every row of every table, ids included (meta without the keys that belong to one backend)."""
    from projects.workspace_copy import _tables

    with Workspace.open(target) as ws:
        out = {}
        for table in _tables(ws.db):
            rows = [dict(r) for r in ws._rows(f'SELECT * FROM "{table}"')]
            if table == "meta":
                rows = [r for r in rows if r["key"] not in LOCAL_META]
            out[table] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))
    return out


def test_sqlite_to_postgres_and_back_keeps_every_row_and_id(rich, pg, tmp_path, capsys):
    before = dump(rich)
    assert all(before.values()), [t for t in before if not before[t]]  # a new table needs a row in `rich`
    assert main(["workspace", "copy", str(rich), pg, "--image-root", str(rich)]) == 0
    out = capsys.readouterr().out
    assert f"to {pg}:" in out and "24 image files verified by content hash" in out
    on_pg = dump(pg)
    assert on_pg == before  # every table, every id, every value; paths stay relative to the same root

    with Workspace.open(pg) as ws:  # a working team workspace: new rows get new ids, files verify
        img = ws.image_ids("A", "submitted")[1]  # submitted: a new box leaves its status alone
        assert ws.verify_image(img) == rich.resolve() / ws.image(img)["path"]
        new = ws.add_annotation(img, ws.labels("A")[0]["id"], (0, 0, 5, 5))
        assert new == max(r["id"] for r in before["annotations"]) + 1
        ws.delete_annotation(new)
        ws.db.execute("DELETE FROM annotations WHERE id = ?", [new])

    back = tmp_path / "back"  # and back to a folder, the images copied into it
    assert main(["workspace", "copy", pg, str(back), "--copy-images", str(back), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images_copied"] == 24 and report["images_verified"] == 24
    assert report["tables"]["annotations"] == len(before["annotations"])
    again = dump(back)
    model_path = again["models"][0].pop("path")
    assert model_path == str(rich.resolve() / "models" / "v1")  # not under the new folder: absolute
    before["models"][0].pop("path")
    assert again == before
    with Workspace.open(back) as ws:
        for img in ws.image_ids("B"):
            assert ws.verify_image(img).is_relative_to(back.resolve())
    assert not list(tmp_path.glob(".back.copy-*"))


def test_copy_images_into_a_team_image_root(rich, pg, tmp_path):
    shared = tmp_path / "shared"
    report = copy_workspace(rich, pg, copy_images=shared / "team1")  # the copy folder becomes the image root
    assert (report.images_copied, report.images_verified) == (24, 24)
    with Workspace.open(pg) as ws:
        assert ws.folder == (shared / "team1").resolve()
        paths = [ws.image(i)["path"] for i in ws.image_ids("C")]
        assert paths and all(p.startswith("images/C/") for p in paths)
        assert all(ws.verify_image(i) for i in ws.image_ids("C"))


def test_a_team_destination_refuses_images_outside_its_image_root(rich, pg, tmp_path, pg_server):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(WorkspaceError, match="outside the destination's image root") as e:
        copy_workspace(rich, pg, image_root=elsewhere)
    assert "(24 images are)" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(WorkspaceError, match="needs --image-root"):
        copy_workspace(rich, pg)
    with Workspace.create(pg_server.create_database(), image_root=elsewhere) as ws:  # not empty
        with pytest.raises(WorkspaceError, match="already holds a workspace"):
            copy_workspace(rich, ws.location, image_root=rich)
    _assert_empty_database(pg)


def test_a_destination_that_is_not_new_or_empty_is_refused_untouched(rich, tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    assert main(["workspace", "copy", str(rich), str(full)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err
    assert [p.name for p in full.iterdir()] == ["notes.txt"]
    assert main(["workspace", "copy", str(rich), str(rich)]) == 2
    assert "not empty" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["workspace", "copy", str(rich), str(empty)]) == 0  # an empty folder is fine
    assert (empty / "labeler.sqlite").is_file()


def test_a_changed_image_fails_the_check_and_writes_nothing(rich, tmp_path):
    with Workspace.open(rich) as ws:
        victim = ws.image_path(ws.image(ws.image_ids("B")[2])["path"])
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    dst = tmp_path / "dst"
    with pytest.raises(ImageError, match="content-hash check") as e:
        copy_workspace(rich, dst)
    assert victim.name in str(e.value) and "--no-image-check" in str(e.value)
    assert not dst.exists() and not list(tmp_path.glob(".dst.copy-*"))
    report = copy_workspace(rich, dst, check_images=False)  # the rows anyway, when the user says so
    assert report.images_verified == 0 and report.tables["images"] == 24


class Fault(Exception):
    pass


def _fault_at(table: str, exc: type[BaseException]):
    def progress(name: str, done: int, total: int) -> None:
        if name == table:
            raise exc("injected mid-copy")
    return progress


@pytest.mark.parametrize("exc", [Fault, KeyboardInterrupt])
@pytest.mark.parametrize("kind", ["postgres", "folder"])
def test_an_interrupted_copy_leaves_the_destination_unchanged(rich, pg, tmp_path, kind, exc):
    dst = pg if kind == "postgres" else str(tmp_path / "dst")
    with pytest.raises(exc):  # after the schema and several tables were written, before the commit
        copy_workspace(rich, dst, image_root=rich if kind == "postgres" else None,
                       progress=_fault_at("annotations", exc))
    _assert_untouched(kind, dst, tmp_path)
    report = copy_workspace(rich, dst, image_root=rich if kind == "postgres" else None)  # the retry works
    assert report.tables["annotations"] > 0


@pytest.mark.parametrize("kind", ["postgres", "folder"])
def test_a_sigkilled_copy_leaves_the_destination_unchanged(rich, pg, tmp_path, kind):
    dst = pg if kind == "postgres" else str(tmp_path / "dst")
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from projects.workspace_copy import copy_workspace

        def progress(table, done, total):
            if table == "annotations":
                os.kill(os.getpid(), signal.SIGKILL)

        copy_workspace({str(rich)!r}, {dst!r}, image_root={str(rich) if kind == "postgres" else None!r},
                       progress=progress)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    if kind == "folder":
        assert list(tmp_path.glob(".dst.copy-*"))  # the staging folder of the killed copy
    _assert_untouched(kind, dst, tmp_path, staging_ok=True)
    copy_workspace(rich, dst, image_root=rich if kind == "postgres" else None)
    assert not list(tmp_path.glob(".dst.copy-*"))  # the next copy cleared the dead one's staging
    copied, source = dump(dst), dump(rich)
    if kind == "folder":  # folder to folder without --copy-images: the paths point back into the source, absolute
        for table in ("images", "models"):
            for row in source[table]:
                row["path"] = str(rich.resolve() / row["path"])
    assert copied == source


def _assert_untouched(kind: str, dst: str, tmp_path: Path, staging_ok: bool = False) -> None:
    if kind == "postgres":
        _assert_empty_database(dst)
    else:
        assert not os.path.exists(dst)
        if not staging_ok:
            assert not list(tmp_path.glob(".dst.copy-*"))


def _assert_empty_database(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        assert tables.fetchall() == []

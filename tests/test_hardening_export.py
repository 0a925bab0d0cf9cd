"""`labeler export --overwrite` never deletes a workspace, its database, its images or a folder it did not write."""

from __future__ import annotations

import numpy as np
import pytest
from test_formats_support import make_source

from labeler.cli import main
from projects.imaging import probe_image, write_image
from projects.workspace import Workspace


def export(capsys, ws, out, *extra) -> tuple[int, str]:
    code = main(["export", str(ws), "--project", "P", "--format", "coco", str(out), "--overwrite", *extra])
    return code, capsys.readouterr().err


def tree(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("target", ["ws", "parent", "images", "db", "inside"])
def test_overwrite_never_touches_the_workspace(tmp_path, capsys, target):
    make_source(tmp_path / "src").close()
    ws = tmp_path / "src" / "ws"
    out = {"ws": ws, "parent": tmp_path / "src", "images": ws / "images", "db": ws / "labeler.sqlite",
           "inside": ws / "exports" / "coco"}[target]
    before = tree(tmp_path)
    code, err = export(capsys, ws, out)
    assert code == 2 and "workspace" in err and err.count("\n") == 1
    assert tree(tmp_path) == before
    with Workspace.open(ws) as w:
        assert w.stats()["projects"][0]["annotations"] == 6


def test_overwrite_refuses_other_workspaces_and_spelled_differently(tmp_path, capsys):
    make_source(tmp_path / "src").close()
    other = tmp_path / "elsewhere"
    Workspace.create(other / "team" / "ws2").close()
    for out in (other, tmp_path / "src" / "ws" / ".." / "ws"):
        code, err = export(capsys, tmp_path / "src" / "ws", out)
        assert code == 2 and "workspace" in err
    assert (other / "team" / "ws2" / "labeler.sqlite").is_file()
    (tmp_path / "link").symlink_to(tmp_path / "src" / "ws")
    code, err = export(capsys, tmp_path / "src" / "ws", tmp_path / "link")
    assert code == 2 and (tmp_path / "src" / "ws" / "labeler.sqlite").is_file()


def test_overwrite_refuses_a_folder_holding_the_projects_images(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "a.png", np.zeros((20, 30, 3), np.uint8))
    ws = Workspace.create(tmp_path / "ws")
    ws.add_project("P")
    ws.insert_images(ws.project_id("P"), [probe_image(photos / "a.png")])
    ws.close()
    code, err = export(capsys, tmp_path / "ws", photos)
    assert code == 2 and "image" in err and (photos / "a.png").is_file()


def test_overwrite_replaces_only_an_earlier_export(tmp_path, capsys):
    make_source(tmp_path / "src").close()
    ws = tmp_path / "src" / "ws"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    code, err = export(capsys, ws, mine)
    assert code == 2 and "not a Labeler export" in err and (mine / "thesis.tex").read_text() == "years of work"

    out = tmp_path / "out"
    assert export(capsys, ws, out)[0] == 0
    (out / "stale.txt").write_text("from last time")
    assert export(capsys, ws, out)[0] == 0  # an earlier export is replaced as a whole
    assert not (out / "stale.txt").exists() and (out / ".labeler-export").is_file()
    assert any(out.rglob("*.json"))

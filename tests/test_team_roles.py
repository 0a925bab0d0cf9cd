"""Roles of a team workspace on a real PostgreSQL server: an annotator login labels, claims and submits, and the
server refuses it a taxonomy change, a new project or a model, each as one clear line."""

from __future__ import annotations

import pytest

from projects.errors import PermissionDeniedError, WorkspaceError
from projects.imaging import ImageInfo
from projects.roles import grant
from projects.taxonomy import CustomerTaxonomy, Label
from projects.team import submit_claimed
from projects.workspace import Workspace


@pytest.fixture
def team_url(pg_server, tmp_path):
    url = pg_server.create_database()
    with Workspace.create(url, image_root=tmp_path) as ws:
        ws.add_project("P", CustomerTaxonomy([Label("Human", "person")]))
        ws.insert_images(ws.project_id("P"), [ImageInfo(tmp_path / f"{k}.jpg", f"{k}" * 64, 64, 48)
                                              for k in range(3)])
        assert grant(ws, "ann", "annotator") is True
        assert grant(ws, "boss", "admin") is True
    yield url
    pg_server.drop_database(url)
    import psycopg

    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:  # logins belong to the whole server
        for login in ("ann", "boss", "carl"):
            conn.execute(f'DROP ROLE IF EXISTS "{login}"')


def _as(url: str, login: str) -> str:
    return url.replace("://labeler@", f"://{login}@")


def test_an_annotator_labels_and_submits_but_changes_no_taxonomy_project_or_model(team_url, tmp_path):
    with Workspace.open(_as(team_url, "ann")) as ws:
        (lease,) = ws.claim("P", "ann")
        aid = ws.add_annotation(lease.image_id, ws.labels("P")[0]["id"], (1, 2, 30, 40), author="ann")
        assert ws.update_annotation(aid, box=(2, 2, 30, 40), version=1, user="ann") == 2
        ws.delete_annotation(aid, version=2)
        ws.restore_annotation(aid, version=3)
        submit_claimed(ws, lease.image_id, "ann")
        assert ws.image(lease.image_id)["submitted_by"] == "ann"
        refused = {
            "add a label": lambda: ws.add_label("P", "Rider", "cyclist"),
            "add a project": lambda: ws.add_project("Q"),
            "register a model": lambda: ws.register_model("v9", tmp_path / "m"),
            "set the gold share": lambda: ws.set_gold_share("P", 0.5),
            "change the super-taxonomy": lambda: ws.ensure_node("scooter"),
            "add images": lambda: ws.insert_images(ws.project_id("P"), [ImageInfo(tmp_path / "x.jpg", "x" * 64, 8, 8)]),
        }
        for what, attempt in refused.items():
            with pytest.raises(PermissionDeniedError) as info:
                attempt()
            text = str(info.value)
            assert "permission denied" in text and "login 'ann'" in text and "\n" not in text, what
        with pytest.raises(PermissionDeniedError):
            ws.db.execute("DELETE FROM projects")  # whatever program the annotator connects with
        assert ws.project_names() == ["P"] and [lab["name"] for lab in ws.labels("P")] == ["Human"]
        assert ws.models() == []


def test_an_admin_may_change_the_taxonomy_and_a_role_can_change(team_url, tmp_path):
    with Workspace.open(_as(team_url, "boss")) as ws:
        ws.add_label("P", "Rider", "cyclist")
        ws.register_model("v1", tmp_path / "m")
        ws.set_gold_share("P", 0.2)
    with Workspace.open(team_url) as ws:  # the owner hands out roles
        assert grant(ws, "ann", "admin") is False
    with Workspace.open(_as(team_url, "ann")) as ws:
        ws.add_project("Q")
    with Workspace.open(team_url) as ws:
        grant(ws, "ann", "annotator")
    with Workspace.open(_as(team_url, "ann")) as ws, pytest.raises(PermissionDeniedError):
        ws.add_project("R")


def test_the_cli_says_a_refusal_in_one_line(team_url, capsys):
    from labeler.cli import main

    assert main(["project", "add", _as(team_url, "ann"), "Q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "permission denied for table projects" in err and "login 'ann'" in err
    assert main(["team", "grant", team_url, "--user", "carl", "--role", "annotator"]) == 0
    assert "created login 'carl': annotator" in capsys.readouterr().out
    assert main(["claim", _as(team_url, "carl"), "--project", "P", "--user", "carl"]) == 0


def test_a_folder_workspace_cannot_enforce_roles(tmp_path, capsys):
    from labeler.cli import main

    Workspace.create(tmp_path / "w").close()
    assert main(["team", "grant", str(tmp_path / "w"), "--user", "ann", "--role", "annotator"]) == 2
    assert "a folder workspace cannot enforce roles" in capsys.readouterr().err
    with Workspace.open(tmp_path / "w") as ws, pytest.raises(WorkspaceError, match="all or nothing"):
        grant(ws, "ann", "annotator")

"""The stable basic CLI: init, project add, images add, stats --json, demo; bad input changes nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from labeler.cli import main
from projects.imaging import write_image
from projects.synthetic import make_scene
from projects.taxonomy import resource_path

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_init_project_images_stats(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert run(capsys, "init", ws)[0] == 0
    assert run(capsys, "project", "add", ws, "B", "--taxonomy", resource_path("taxonomies", "B.yaml"))[0] == 0
    assert run(capsys, "project", "add", ws, "Empty")[0] == 0
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        write_image(imgs / f"{i}.png", make_scene(i).image)
    (imgs / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    code, out, err = run(capsys, "images", "add", ws, "--project", "B", imgs)
    assert code == 0 and "added 3 images" in out and "bad.jpg" in err
    code, out, _ = run(capsys, "stats", ws, "--json")
    data = json.loads(out)
    b = next(p for p in data["projects"] if p["name"] == "B")
    assert b["images"] == 3 and b["annotations"] == 0
    assert b["labels"][:2] == ["Pedestrian_adult", "Pedestrian_child"]
    assert "person" in b["labeled_nodes"] and "vehicle" in b["labeled_nodes"]
    assert b["missing_nodes"] == ["cyclist", "traffic_sign"]
    empty = next(p for p in data["projects"] if p["name"] == "Empty")
    assert empty["labels"] == [] and len(empty["missing_nodes"]) == 11


@pytest.mark.parametrize("argv,reason", [
    (["project", "add", "{ws}", "X", "--taxonomy", "{bad_tax}"], "unknown node 'robot'"),
    (["project", "add", "{ws}", "A"], "already exists"),
    (["images", "add", "{ws}", "--project", "Nope", "{ws}"], "no project named 'Nope'"),
    (["images", "add", "{ws}", "--project", "A", "{bad_img}"], "no image could be added"),
    (["stats", "{nows}"], "not a workspace"),
    (["init", "{ws}"], "already exists"),
    (["init", "{ws2}", "--super-taxonomy", "{bad_tax}"], "expected a mapping with a 'nodes' list"),
])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, capsys, argv, reason):
    ws = tmp_path / "ws"
    main(["init", str(ws)])
    main(["project", "add", str(ws), "A", "--taxonomy", str(resource_path("taxonomies", "A.yaml"))])
    capsys.readouterr()
    bad_tax = tmp_path / "bad.yaml"
    bad_tax.write_text("labels:\n  - {name: Robot, node: robot}\n")
    bad_img = tmp_path / "bad.png"
    bad_img.write_bytes(b"not an image")
    before = digest(ws / "labeler.sqlite")
    fmt = dict(ws=ws, ws2=tmp_path / "ws2", bad_tax=bad_tax, bad_img=bad_img, nows=tmp_path / "nothing")
    code, out, err = run(capsys, *[a.format(**fmt) for a in argv])
    assert code != 0
    last = err.strip().splitlines()[-1]
    assert last.startswith("labeler: error:") and reason in last
    assert digest(ws / "labeler.sqlite") == before
    assert not (tmp_path / "ws2" / "labeler.sqlite").exists()


def test_demo_builds_three_customers(tmp_path, capsys):
    ws = tmp_path / "demo"
    code, out, _ = run(capsys, "demo", ws, "--no-gui", "--images", "30", "--seed", "3")
    assert code == 0 and str(ws.resolve()) in out
    data = json.loads(run(capsys, "stats", ws, "--json")[1])
    by = {p["name"]: p for p in data["projects"]}
    assert set(by) == {"A", "B", "C"}
    assert by["A"]["labels"] == ["Human"] and by["A"]["labeled_nodes"] == ["person"]
    assert by["C"]["labels"] == ["Vehicle"] and by["C"]["labeled_nodes"] == ["vehicle"]
    assert "pedestrian_child" in by["B"]["labeled_nodes"] and "cyclist" in by["B"]["missing_nodes"]
    for p in by.values():
        assert p["images"] == 10 and 0 < p["status"]["submitted"] < 10 and p["status"]["unlabeled"] > 0
    truth = json.loads((ws / "ground_truth.json").read_text())["images"]
    assert len(truth) == 30
    # idempotent: a second run reuses the workspace
    code, out, _ = run(capsys, "demo", ws, "--no-gui", "--images", "30")
    assert code == 0 and "reusing" in out


def test_console_entry_point_and_module_run():
    r = subprocess.run([sys.executable, "-m", "labeler", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "init" in r.stdout and "stats" in r.stdout
    r = subprocess.run([sys.executable, "-m", "labeler", "stats", "/nonexistent/ws"], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a workspace" in r.stderr

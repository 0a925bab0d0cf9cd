"""`labeler import` / `labeler export`: exit codes, one-line errors, reports, nothing written on failure."""

from __future__ import annotations

from test_formats_support import TAXONOMY, make_source, snapshot

from labeler.cli import main
from projects.workspace import Workspace


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_export_then_import_through_the_cli(tmp_path, capsys):
    make_source(tmp_path / "src").close()
    code, out, _ = run(capsys, "export", tmp_path / "src" / "ws", "--project", "P", "--format", "coco",
                       tmp_path / "out")
    assert code == 0 and "exported 6 boxes on 4 images" in out
    Workspace.create(tmp_path / "dst").close()
    assert run(capsys, "project", "add", tmp_path / "dst", "Q")[0] == 0
    code, out, err = run(capsys, "import", tmp_path / "dst", "--project", "Q", "--format", "coco", tmp_path / "out")
    assert code == 2 and "labels not in project 'Q'" in err and "nothing was imported" in err
    code, out, err = run(capsys, "import", tmp_path / "dst", "--project", "Q", "--format", "coco",
                         tmp_path / "out", "--add-labels")
    assert code == 0 and out.startswith("imported 6 boxes on 4 images") and "added labels: Car, Human, Light" in err
    with Workspace.open(tmp_path / "dst") as ws:
        assert ws.stats()["projects"][0]["annotations"] == 6


def test_map_file_and_bad_map_file(tmp_path, capsys):
    src = make_source(tmp_path / "src")
    src.close()
    run(capsys, "export", tmp_path / "src" / "ws", "--project", "P", "--format", "voc", tmp_path / "out")
    dst = Workspace.create(tmp_path / "dst")
    dst.add_project("Q", TAXONOMY)
    dst.add_label("Q", "Vehicle", "vehicle")
    before = snapshot(dst, tmp_path / "dst")
    dst.close()
    (tmp_path / "map.yaml").write_text("Car: Vehicle\nLight: null\n")
    (tmp_path / "bad.yaml").write_text("- just\n- a list\n")
    code, _, err = run(capsys, "import", tmp_path / "dst", "--project", "Q", "--format", "voc", tmp_path / "out",
                       "--map", tmp_path / "bad.yaml")
    assert code == 2 and "bad.yaml" in err and "mapping" in err
    with Workspace.open(tmp_path / "dst") as ws:
        assert snapshot(ws, tmp_path / "dst") == before
    code, out, err = run(capsys, "import", tmp_path / "dst", "--project", "Q", "--format", "voc", tmp_path / "out",
                         "--map", tmp_path / "map.yaml")
    assert code == 0 and "imported 5 boxes" in out and "boxes dropped by the label mapping: 1" in err
    with Workspace.open(tmp_path / "dst") as ws:
        labels = {a["label"] for i in ws.image_ids("Q") for a in ws.annotations(i)}
    assert labels == {"Vehicle", "Human"}


def test_cli_errors_are_clean_and_change_nothing(tmp_path, capsys):
    make_source(tmp_path / "src").close()
    ws = tmp_path / "src" / "ws"
    (tmp_path / "broken.json").write_text('{"images": [}')
    code, _, err = run(capsys, "import", ws, "--project", "P", "--format", "coco", tmp_path / "broken.json")
    assert code == 2 and "broken.json: line 1 column 13: not valid JSON" in err
    code, _, err = run(capsys, "import", ws, "--project", "Nope", "--format", "coco", tmp_path / "broken.json")
    assert code == 2 and "Nope" in err
    code, _, err = run(capsys, "export", ws, "--project", "P", "--format", "archive", tmp_path / "broken.json")
    assert code == 2 and "already exists" in err
    assert (tmp_path / "broken.json").read_text() == '{"images": [}'  # not overwritten

"""The command line on hostile names and noisy dependencies: one clean line, no traceback, no warning noise."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from projects.imaging import write_image
from projects.workspace import Workspace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def labeler(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labeler", *map(str, argv)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_a_file_name_that_is_not_utf8_is_skipped_and_named(tmp_path):
    Workspace.create(tmp_path / "ws").close()
    assert labeler("project", "add", tmp_path / "ws", "P").returncode == 0
    folder = tmp_path / "imgs"
    folder.mkdir()
    write_image(folder / "good.png", np.zeros((8, 8, 3), np.uint8))
    write_image(folder / "tmp.png", np.zeros((9, 9, 3), np.uint8))
    os.rename(os.fsencode(folder / "tmp.png"), os.fsencode(folder) + b"/\xffbad.png")
    r = labeler("images", "add", tmp_path / "ws", "--project", "P", folder)
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "added 1 images" in r.stdout and "\\xffbad.png" in r.stderr and "not valid UTF-8" in r.stderr
    with Workspace.open(tmp_path / "ws") as ws:
        assert [ws.image(i)["path"] for i in ws.image_ids("P")] == [str((folder / "good.png").resolve())]


def test_commands_that_load_the_model_print_no_dependency_warnings(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    ws.add_project("P")
    write_image(tmp_path / "a.png", np.zeros((32, 32, 3), np.uint8))
    ws.add_images("P", [tmp_path / "a.png"])
    ws.close()
    r = labeler("predict", tmp_path / "ws", "--project", "P", "--model", os.path.join(ROOT, "resources/models/demo"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Warning" not in r.stderr and "torch.jit" not in r.stderr

"""`labeler open`: offscreen screenshots, bad input, remembering the last workspace, and a kill loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PySide6.QtGui import QImage
from test_gui_support import copy_workspace

from labeler import cli
from labeler.app import settings, window_runner
from projects.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ws_copy(demo_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELER_SETTINGS", str(tmp_path / "settings.ini"))
    return copy_workspace(demo_ws, tmp_path / "ws")


def env(tmp_path) -> dict:
    return {**os.environ, "QT_QPA_PLATFORM": "offscreen", "LABELER_SETTINGS": str(tmp_path / "settings.ini"),
            "PYTHONPATH": str(ROOT)}


def test_screenshot_renders_the_real_window_offscreen(ws_copy, tmp_path):
    out = tmp_path / "shot.png"
    r = subprocess.run([sys.executable, "-m", "labeler", "open", str(ws_copy), "--project", "B", "--image", "2",
                        "--screenshot", str(out)], capture_output=True, text=True, cwd=ROOT, env=env(tmp_path),
                       timeout=120)
    assert r.returncode == 0, r.stderr
    img = QImage(str(out))
    assert (img.width(), img.height()) == (1440, 880)
    colors = {img.pixel(x, y) for x in range(0, 1440, 40) for y in range(0, 880, 40)}
    assert len(colors) > 20  # a real picture, not a blank window


def test_bad_input_is_one_line_and_exit_2(ws_copy, tmp_path, capsys, qapp):
    out = str(tmp_path / "x.png")
    assert cli.main(["open", str(ws_copy), "--image", "999", "--screenshot", out]) == 2
    assert "--image 999: project 'A' has 8 images (use 1..8)" in capsys.readouterr().err
    assert cli.main(["open", str(ws_copy), "--project", "Z", "--screenshot", out]) == 2
    assert "no project named 'Z'" in capsys.readouterr().err
    assert cli.main(["open", str(tmp_path), "--screenshot", out]) == 2
    assert "not a workspace" in capsys.readouterr().err
    assert cli.main(["open", str(ws_copy), "--screenshot", str(tmp_path / "no" / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["open", "--screenshot", out]) == 2  # nothing given, nothing remembered
    assert "none remembered" in capsys.readouterr().err
    assert not Path(out).exists()


def test_no_display_is_a_clear_error_not_an_abort(ws_copy, tmp_path):
    environ = {k: v for k, v in env(tmp_path).items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    code = ("import argparse, sys; from labeler.cli import EXPECTED_ERRORS; import labeler.commands.open as o\n"
            f"try: o.open_window(argparse.Namespace(ws={str(ws_copy)!r}, project=None, screenshot=None, image=None))\n"
            "except EXPECTED_ERRORS as e: print(e, file=sys.stderr); sys.exit(2)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=environ, timeout=120)
    assert r.returncode == 2 and "no display found" in r.stderr


def test_labeler_alone_reopens_the_last_workspace_and_project(ws_copy, monkeypatch, qapp):
    settings.remember(ws_copy, "C")
    assert window_runner.resolve_workspace(None, ask=False) == ws_copy.resolve()
    opened = []

    def fake_run(app, session):
        opened.append((session.ws.folder, session.project))
        session.ws.close()
        return 0

    monkeypatch.setattr(window_runner, "run_window", fake_run)
    assert cli.main([]) == 0
    assert opened == [(ws_copy.resolve(), "C")]


KILLED = textwrap.dedent("""
    import sys
    sys.path[:0] = [sys.argv[2], sys.argv[2] + "/tests"]
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication
    from labeler.app.main_window import MainWindow
    from labeler.app.session import LabelingSession
    from projects.workspace import Workspace
    from test_gui_support import drag

    app = QApplication([])
    w = MainWindow(LabelingSession(Workspace.open(sys.argv[1]), "B"))
    w.show()
    w.activateWindow()

    def edit():
        for k in range(3):
            drag(w.canvas, (10 + 60 * k, 20), (50 + 60 * k, 80))
            print("box", w.session.annotations[-1]["id"], flush=True)
        QTest.keyClick(w.canvas, Qt.Key.Key_Return)
        print("submitted", flush=True)

    w.image_ready.connect(lambda image_id: edit() if image_id == w.session.queue[0] else None)
    app.exec()
""")


def test_killing_the_process_loses_nothing(ws_copy, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(ws_copy), str(ROOT)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env(tmp_path))
    try:
        lines = [proc.stdout.readline().split() for _ in range(4)]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert lines[-1] == ["submitted"], proc.stderr.read()
    ids = {int(line[1]) for line in lines[:3]}
    with Workspace.open(ws_copy) as ws:
        first = ws.image_ids("B")[0]
        assert ids <= {a["id"] for a in ws.annotations(first)}
        assert all(ws.annotation(i)["provenance"] == "manual" for i in ids)
        assert ws.image(first)["status"] == "submitted"

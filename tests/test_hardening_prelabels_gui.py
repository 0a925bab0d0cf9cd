"""In the window: an image the worker cannot predict is reported in the status bar and the worker keeps
serving the next images; a worker that stops says so instead of "model … ready" (issue 10, item 5)."""

from __future__ import annotations

import shutil

from test_gui_support import copy_workspace

from inference.qt_worker import QtPredictionWorker
from inference.registry import register_checkpoint
from labeler.app import prelabels
from labeler.app.session import LabelingSession
from labeler.app.window_runner import build_window
from projects.taxonomy import resource_path
from projects.workspace import Workspace

MODEL = resource_path("models", "demo")


def test_an_empty_image_is_reported_and_the_next_one_gets_pre_labels(qtbot, demo_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELER_SETTINGS", str(tmp_path / "settings.ini"))
    folder = copy_workspace(demo_ws, tmp_path / "ws")
    shutil.copytree(MODEL, folder / "models" / "demo")
    with Workspace.open(folder) as ws:
        register_checkpoint(ws, folder / "models" / "demo")
        first = ws.image_ids("B")[0]
        empty = ws.image_path(ws.image(first)["path"])
    empty.write_bytes(b"")
    w = build_window(LabelingSession(Workspace.open(folder), "B"))
    qtbot.addWidget(w)
    messages: list[str] = []
    w.statusBar().messageChanged.connect(messages.append)
    w.show()
    try:
        assert w.session.image["id"] == first
        qtbot.waitUntil(lambda: any(m.startswith("pre-labels: ") and f"{empty.name}: empty file" in m
                                    for m in messages), timeout=120000)
        assert first not in w.prelabels.detections
        w.session.next()
        second = w.session.image["id"]
        qtbot.waitUntil(lambda: second in w.prelabels.detections, timeout=60000)
        assert w.prelabels.worker.service._thread.is_alive()
        assert w.prelabels.status.text().endswith("ready") and w.prelabels.stopped is None
    finally:
        w.close()
        w.session.ws.close()


def test_a_stopped_worker_never_reads_model_ready(qtbot, demo_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELER_SETTINGS", str(tmp_path / "settings.ini"))
    folder = copy_workspace(demo_ws, tmp_path / "ws")
    w = build_window(LabelingSession(Workspace.open(folder), "B"), prelabels=False)
    qtbot.addWidget(w)
    worker = QtPredictionWorker(tmp_path / "gone", threads=1)  # its workspace cannot be opened: the thread ends
    ctl = prelabels.install(w, worker)
    w.show()
    try:
        qtbot.waitUntil(lambda: ctl.stopped is not None, timeout=30000)
        assert ctl.status.text() == "model: stopped, no pre-labels"
        assert "cannot open the workspace" in ctl.status.toolTip()
        assert w.statusBar().currentMessage().startswith("pre-labels stopped: the prediction worker cannot open")
        ctl._on_status("model v9 ready")  # a late status line must not bring "ready" back
        assert ctl.status.text() == "model: stopped, no pre-labels"
    finally:
        w.close()
        w.session.ws.close()

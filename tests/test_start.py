"""Start and quit of the labeling window: the image first, torch later and only in the worker, cached
pre-labels without the model, a quit that does not wait for a model load, and where a project opens.

Nothing here asserts on wall time: each test checks an order of events or a state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from test_gui_support import copy_workspace

from inference.qt_worker import QtPredictionWorker
from inference.worker import PredictionService, Priority
from labeler.app.prelabels import PrelabelController
from labeler.app.session import LabelingSession
from labeler.app.window_runner import build_window, open_session
from projects.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
CAR = ("car", (20.0, 30.0, 120.0, 110.0), 0.9)


@pytest.fixture
def ws_cached(demo_ws, tmp_path, monkeypatch):
    """A copy of the demo workspace with a registered model whose predictions of every image are stored
    (the model folder holds no checkpoint: loading it would fail, answering from the cache must not)."""
    monkeypatch.setenv("LABELER_SETTINGS", str(tmp_path / "settings.ini"))
    folder = copy_workspace(demo_ws, tmp_path / "ws")
    with Workspace.open(folder) as ws:
        model_id = ws.register_model("v1", folder / "models" / "v1")
        for project in ws.project_names():
            for image_id in ws.image_ids(project):
                ws.save_predictions(image_id, model_id, [CAR])
    return folder


# --- the process: first paint before torch, quit at once, nothing lost ---------------------------------
DRIVER = textwrap.dedent("""
    import sys
    sys.path[:0] = [sys.argv[2], sys.argv[2] + "/tests"]
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtTest import QTest
    from labeler import cli
    from labeler.app import startup
    from test_gui_support import drag

    attach = startup.report_to

    def drive(window):
        print("other commands loaded", "labeler.commands.transfer" in sys.modules, flush=True)
        drag(window.canvas, (10, 20), (60, 90))  # one manual box, then Ctrl+Q as a person would
        print("box", window.session.annotations[-1]["id"], flush=True)
        QTest.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)

    def report_and_drive(window):
        report = attach(window)
        startup.after_first_paint(window, lambda: QTimer.singleShot(200, lambda: drive(window)))
        return report

    startup.report_to = report_and_drive
    sys.exit(cli.main(["open", sys.argv[1], "--project", "B"]))
""")


def test_first_paint_comes_before_torch_and_quit_loses_nothing(ws_cached, tmp_path):
    report = tmp_path / "report.jsonl"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "LABELER_STARTUP_REPORT": str(report),
           "LABELER_SETTINGS": str(tmp_path / "settings.ini"), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", DRIVER, str(ws_cached), str(ROOT)], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    events = {e["event"]: e for e in map(json.loads, report.read_text().splitlines())}
    assert events["painted"]["torch"] is False  # the window painted its image before anything imported torch
    assert {"painted", "closed", "exit"} <= events.keys()
    lines = r.stdout.splitlines()
    assert lines[0] == "other commands loaded False"  # `labeler open` loads only the open command
    box_id = int(lines[1].split()[1])
    with Workspace.open(ws_cached) as ws:
        row = ws.annotation(box_id)
        assert row["deleted_at"] is None and row["provenance"] == "manual"
        assert ws.image(row["image_id"])["status"] == "in_progress"


def test_projects_import_leaves_pandas_out():
    code = "import sys, projects.workspace, labeler.cli; print('pandas' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.stdout.strip() == "False", r.stderr


# --- the worker: cached predictions need neither torch nor the model ------------------------------------
class Det:
    def __init__(self, node, box, score):
        self.node, self.box, self.score = node, box, score


def test_cached_predictions_are_answered_before_the_model_loads(ws_cached):
    loads: list[Path] = []

    def loader(path: Path, threads: int):
        loads.append(path)
        raise ValueError("not a model")

    results = []
    with Workspace.open(ws_cached) as ws:
        ids = ws.image_ids("B")
    svc = PredictionService(ws_cached, on_result=results.append, loader=loader, threads=1)
    svc.request(ids[0], Priority.VISIBLE)
    svc.request_many(ids[1:3], Priority.PREFETCH)
    svc.start()
    assert svc.wait_idle(60)
    svc.stop()
    assert [r.image_id for r in results] == ids[:3]
    assert all(r.cached and r.model_version == "v1" and r.error is None for r in results)
    assert results[0].detections[0].node == "car" and results[0].detections[0].box == CAR[1]
    assert loads == [] and svc.predictor is None and svc.forward_passes == 0


def test_the_worker_starts_after_the_first_paint_and_shows_cached_prelabels(qtbot, ws_cached):
    w = build_window(LabelingSession(Workspace.open(ws_cached), "B"), lint=False)
    qtbot.addWidget(w)
    try:
        assert w.prelabels.worker.service._thread is None  # built, not painted: nothing started yet
        w.resize(1000, 700)
        w.show()
        qtbot.waitUntil(lambda: w.canvas.proposal_boxes() != {}, timeout=30000)
        assert w.prelabels.worker.service._thread is not None
        assert list(w.canvas.proposal_boxes().values()) == [CAR[1]]
        assert w.prelabels.status.text() == "model: v1 (stored pre-labels)"
    finally:
        w.close()
        w.session.ws.close()


def test_closing_the_window_does_not_wait_for_a_model_that_is_loading(qtbot, ws_cached):
    with Workspace.open(ws_cached) as ws:
        ws.register_model("v2", ws.folder / "models" / "v2")  # newer, nothing cached: it must be loaded
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    class Slow:
        version = "v2"

        def predict(self, images: list[np.ndarray]):
            return [[Det(*CAR)] for _ in images]

    def slow_loader(path: Path, threads: int):
        entered.set()
        release.wait(5)  # a model that takes long to load (torch importing, a big checkpoint); the old
        # quit waited up to 10 s for the worker, so it saw this load finish before the window closed
        finished.set()
        return Slow()

    w = build_window(LabelingSession(Workspace.open(ws_cached), "B"), prelabels=False, lint=False)
    qtbot.addWidget(w)
    worker = QtPredictionWorker(ws_cached, threads=1, loader=slow_loader)
    w.prelabels = PrelabelController(w, worker)
    w.show()
    try:
        qtbot.waitUntil(entered.is_set, timeout=60000)  # painted, worker started, cache missed: loading
        w.close()
        assert not finished.is_set()  # the close returned while the model was still loading
        assert worker.service._stop
    finally:
        release.set()
        worker.service.stop()
        w.session.ws.close()
    assert not worker.service._thread.is_alive()


# --- where a project opens ------------------------------------------------------------------------------
def test_a_project_opens_on_its_first_image_not_submitted(qtbot, ws_cached):
    with Workspace.open(ws_cached) as ws:
        ids = ws.image_ids("B")
        ws.set_status(ids[0], "submitted")
        ws.set_status(ids[1], "submitted")
        ws.set_status(ids[3], "in_progress")
        for image_id in ws.image_ids("C"):
            ws.set_status(image_id, "submitted")
    session = open_session(ws_cached, "B")  # as `labeler open` does
    try:
        assert session.index == 2 and session.image["id"] == ids[2]  # not image 1, which is submitted
        session.open_project("C")
        assert session.index == 0  # every image submitted: the first one
        session.open_project("A")
        assert session.image["status"] != "submitted"
        assert all(session.ws.image(i)["status"] == "submitted" for i in session.queue[:session.index])
    finally:
        session.ws.close()


def test_proposal_nms_in_numpy_keeps_what_torchvision_keeps():
    """The GUI thread de-duplicates proposals without torch; the result is torchvision's batched_nms."""
    import torch
    from torchvision.ops import batched_nms

    from inference.prelabels import Proposal, _nms_per_label

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 60))
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(1, 80, (n, 2))
        boxes = np.hstack([xy, xy + wh])
        scores = rng.uniform(0, 1, n)
        labels = rng.choice(["Car", "Bus", "Human"], n)
        props = [Proposal(i, str(labels[i]), "n", tuple(boxes[i]), float(scores[i])) for i in range(n)]
        names = sorted(set(labels))
        expected = batched_nms(torch.tensor(boxes), torch.tensor(scores),
                               torch.tensor([names.index(x) for x in labels]), 0.5).tolist()
        assert _nms_per_label(props, 0.5) == expected

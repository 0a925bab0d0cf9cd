"""The window's model status, its refresh after a hot swap, and starting/stopping the follow trainer from it."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from test_gui_support import copy_workspace

from inference.registry import register_checkpoint
from labeler.app import trainer_panel
from labeler.app.session import LabelingSession
from labeler.app.trainer_panel import ModelInfo, model_info, model_text, trainer_command, trainer_text
from labeler.app.window_runner import build_window
from projects import trainer_status
from projects.split import split_of
from projects.taxonomy import resource_path
from projects.workspace import Workspace

MODEL = resource_path("models", "demo")


def test_the_status_bar_text_says_version_figure_change_and_data():
    assert model_text(ModelInfo(7, "tlm-x", 0.62, 0.04, "test", 1240, 18)) == \
        "model v7 · mAP 0.62 (+0.04) · 1,240 images, 18 new since"
    assert model_text(ModelInfo(3, "tlm-y", 0.5, None, "val", 90, 0)) == "model v3 · mAP 0.50 · 90 images, 0 new since"
    assert model_text(ModelInfo(2, "x", None, None, "", None, None)) == "model v2"
    assert model_text(None) == "no model yet"
    run = {"alive": True, "state": "training", "steps": 1234}
    assert trainer_text(run) == "trainer: step 1,234"
    assert trainer_text({**run, "config": {"world_size": 2}}) == "trainer: step 1,234 on 2 ranks"
    assert trainer_text({**run, "alive": False}) == "trainer: not responding"
    assert trainer_text({**run, "alive": False, "state": "stopped"}) == "trainer: off"
    assert trainer_text(None) == "trainer: off"


def _copy_model(src, dst, version: str, gate: dict | None = None):
    """The demo model under another version (other content: a new registration), with follow gate figures."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "model.json").read_text())
    meta["version"] = version
    if gate is not None:
        meta["metrics"]["gate"] = gate
        meta["data"]["cut_at"] = "2000-01-01T00:00:00.000+00:00"
    (dst / "model.json").write_text(json.dumps(meta))
    return dst


@pytest.fixture
def ws_model(demo_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELER_SETTINGS", str(tmp_path / "settings.ini"))
    folder = copy_workspace(demo_ws, tmp_path / "ws")
    shutil.copytree(MODEL, folder / "models" / "demo")
    with Workspace.open(folder) as ws:
        register_checkpoint(ws, folder / "models" / "demo")
    return folder


def test_model_info_reads_the_gate_figures_and_counts_new_images(ws_model, tmp_path):
    gate = {"metric": "mAP50", "candidate": 0.62, "incumbent": 0.58, "delta": 0.04}
    with Workspace.open(ws_model) as ws:
        first = model_info(ws, ws.models()[0])
        assert first.map50 is not None and first.figure_set == "val" and first.delta is None
        assert first.new_since == 0  # every submitted image was there before it was registered
        register_checkpoint(ws, _copy_model(MODEL, ws_model / "models" / "v2", "follow-2", gate))
        info = model_info(ws, ws.models()[-1])
        submitted = sum(len(ws.image_ids(p, status="submitted")) for p in ws.project_names())
    assert (info.map50, info.delta, info.figure_set) == (0.62, 0.04, "test")
    assert info.new_since == submitted  # its data were cut in 2000: everything was submitted after
    assert info.trained_images == sum(p["images"]["train"] for p in
                                      json.loads((MODEL / "model.json").read_text())["data"]["projects"].values())


def _open(qtbot, folder, **kw):
    w = build_window(LabelingSession(Workspace.open(folder), "B"), **kw)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    return w


def test_a_newer_model_is_shown_and_the_visible_and_prefetched_images_are_predicted_again(qtbot, ws_model):
    w = _open(qtbot, ws_model)
    try:
        assert w.prelabels.wait_for_current(120)
        image_id = w.session.image["id"]
        assert w.prelabels.model_ids[image_id] == 1
        qtbot.waitUntil(lambda: w.trainer.model_label.text().startswith("model v1 · mAP"), timeout=30_000)
        gate = {"metric": "mAP50", "candidate": 0.62, "incumbent": 0.58, "delta": 0.04}
        with Workspace.open(ws_model) as other:  # the follow trainer registers a better version
            new_id = register_checkpoint(other, _copy_model(MODEL, ws_model / "models" / "v2", "follow-2", gate))
        # the image on screen is predicted again by the new model without the annotator moving
        qtbot.waitUntil(lambda: w.prelabels.model_ids.get(image_id) == new_id, timeout=120_000)
        assert w.prelabels.worker.service.model_id == new_id
        qtbot.waitUntil(lambda: w.trainer.model_label.text().startswith(f"model v{new_id} · mAP 0.62 (+0.04)"),
                        timeout=30_000)
        prefetch = [i for i, _ in w.session.neighbours(3)][:3]
        with Workspace.open(ws_model) as other:
            qtbot.waitUntil(lambda: all(other.predictions(i, new_id) is not None for i in prefetch), timeout=120_000)
    finally:
        w.close()
        w.session.ws.close()


def _train_image_to_submit(ws: Workspace) -> tuple[str, int]:
    for p in ws.project_names():
        for i in ws.image_ids(p):
            row = ws.image(i)
            if row["status"] != "submitted" and split_of(row["split_bucket"]) == "train":
                return p, i
    raise AssertionError("no unsubmitted train image")


def test_the_window_starts_and_stops_the_follow_trainer_as_a_child_process(qtbot, demo_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("LABELER_SETTINGS", str(tmp_path / "settings.ini"))
    folder = copy_workspace(demo_ws, tmp_path / "ws")
    w = _open(qtbot, folder, trainer=False, prelabels=False, lint=False)
    extra = ["--image-size", "128", "--batch-size", "2", "--every-steps", "100000", "--poll-seconds", "1"]
    panel = trainer_panel.install(w, extra_args=extra, poll_s=0.5)
    try:
        assert trainer_command(folder, panel.out, extra)[1:5] == ["-m", "labeler", "train", str(folder)]
        assert panel.action.text() == "Start trainer"
        assert panel.start()
        pid = panel.child_pid
        assert trainer_status.pid_running(pid)
        qtbot.waitUntil(lambda: panel.running() is not None and panel.running()["steps"] >= 1, timeout=180_000)
        assert panel.action.text() == "Stop trainer" and panel.trainer_label.text().startswith("trainer: step")
        assert panel.running()["pid"] == pid and panel.running()["out"] == str(panel.out)
        # the stream of the running child sees an image submitted in the window
        p, image_id = _train_image_to_submit(w.session.ws)
        w.session.ws.add_annotation(image_id, w.session.ws.labels(p)[0]["id"], (5, 5, 60, 60), author="t")
        w.session.ws.set_status(image_id, "submitted")
        qtbot.waitUntil(lambda: (panel.running() or {}).get("new_images", 0) >= 1, timeout=60_000)
        panel.toggle()  # Stop trainer
        qtbot.waitUntil(lambda: not trainer_status.pid_running(pid), timeout=60_000)
        qtbot.waitUntil(lambda: panel.last.run is not None and panel.last.run["state"] == "stopped", timeout=10_000)
        assert panel.action.text() == "Start trainer" and panel.trainer_label.text() == "trainer: off"
        assert "follow trainer stopped" in (panel.out / "follow.log").read_text()
    finally:
        if panel.child_pid and trainer_status.pid_running(panel.child_pid):
            import os
            import signal

            os.kill(panel.child_pid, signal.SIGKILL)
            time.sleep(0.5)
        w.close()
        w.session.ws.close()

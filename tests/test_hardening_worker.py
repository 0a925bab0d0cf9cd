"""The prediction worker survives anything one request throws (issue 10, item 5).

A 0-byte image used to kill the worker thread (cv2.error was not an ImageError), so `labeler predict`
and `labeler lint` waited forever and the window's pre-labels silently stopped. Every call that used to
hang runs under `no_hang`, so a regression fails the test instead of freezing CI.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_hardening_images import no_hang

from inference.worker import PredictionService, Priority, Result, predict_images
from projects.imaging import write_image
from projects.synthetic import make_scene

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Det:
    node: str
    box: tuple
    score: float


class FakePredictor:
    """One car per image; raises on images 65 pixels wide (a model error on one image of a batch)."""

    version = "fake"

    def __init__(self):
        self.calls = 0

    def predict(self, images: list[np.ndarray]) -> list[list[Det]]:
        self.calls += len(images)
        if any(img.shape[1] == 65 for img in images):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return [[Det("car", (1.0, 2.0, 30.0, 20.0), 0.9)] for _ in images]


@pytest.fixture
def images(ws):
    """Six images of project P; the third is emptied to 0 bytes after it was added."""
    ws.add_project("P")
    folder = ws.folder / "imgs"
    folder.mkdir()
    for i in range(6):
        write_image(folder / f"{i}.png", make_scene(i, size=(64, 48)).image)
    ids = ws.add_images("P", [folder]).added
    (folder / "2.png").write_bytes(b"")
    ws.register_model("v1", ws.folder / "v1")
    return ids


def service(folder, fake=None, **kw):
    results: list[Result] = []
    status: list[str] = []
    fake = fake or FakePredictor()
    svc = PredictionService(folder, on_result=results.append, on_status=status.append,
                            loader=lambda path, threads: fake, threads=1, **kw)
    return svc, results, status


@pytest.mark.parametrize("batch_size", [1, 4])
def test_a_zero_byte_image_is_reported_and_the_worker_serves_the_next(ws, images, batch_size):
    svc, results, _ = service(ws.folder, batch_size=batch_size)
    svc.request_many(images, Priority.BACKGROUND)
    svc.start()
    try:
        assert svc.wait_idle(20), "the worker stopped answering"
        by_id = {r.image_id: r for r in results}
        assert set(by_id) == set(images)
        assert "2.png: empty file (0 bytes)" in by_id[images[2]].error and by_id[images[2]].detections == []
        assert all(by_id[i].error is None and by_id[i].detections for i in images if i != images[2])
        svc.request(images[2], Priority.VISIBLE)  # asked again (the annotator came back): answered again
        assert svc.wait_idle(20) and results[-1].image_id == images[2] and results[-1].error
        assert svc._thread.is_alive()
    finally:
        svc.stop()
    assert ws.predictions(images[2], 1) is None  # not predicted: retried by the next run
    assert all(ws.predictions(i, 1) for i in images if i != images[2])


def test_a_model_error_on_one_image_costs_only_that_image(ws, images):
    odd = ws.folder / "imgs" / "odd.png"
    write_image(odd, make_scene(9, size=(65, 48)).image)
    (odd_id,) = ws.add_images("P", [odd]).added
    todo = [images[0], odd_id, images[1], images[3]]
    svc, results, _ = service(ws.folder, batch_size=4)
    svc.request_many(todo, Priority.BACKGROUND)
    svc.start()
    try:
        assert svc.wait_idle(20)
    finally:
        svc.stop()
    by_id = {r.image_id: r for r in results}
    assert by_id[odd_id].error == "inference failed (RuntimeError: CUDA error: an illegal memory access was " \
                                  "encountered)"
    assert all(by_id[i].error is None and by_id[i].detections for i in todo if i != odd_id)
    assert ws.predictions(odd_id, 1) is None and all(ws.predictions(i, 1) for i in todo if i != odd_id)


def test_unexpected_failures_never_stop_the_worker(ws, images, monkeypatch):
    from projects.workspace import Workspace

    calls = {"result": 0, "save": 0}
    real_save = Workspace.save_predictions

    def flaky_save(self, image_id, model_id, detections):
        calls["save"] += 1
        if calls["save"] == 1:
            raise sqlite3.OperationalError("database is locked")
        return real_save(self, image_id, model_id, detections)

    monkeypatch.setattr(Workspace, "save_predictions", flaky_save)
    svc, results, _ = service(ws.folder)

    def on_result(r: Result) -> None:
        calls["result"] += 1
        if calls["result"] == 2:
            raise KeyError("a bug in the caller's callback")
        results.append(r)

    svc.on_result = on_result
    svc.request(images[0])
    svc.request(999, Priority.BACKGROUND)  # no such image (deleted meanwhile)
    svc.request_many(images[3:], Priority.BACKGROUND)
    svc.start()
    try:
        assert svc.wait_idle(20)
        svc.request(images[1])
        assert svc.wait_idle(20)
    finally:
        svc.stop()
    errors = {r.image_id: r.error for r in results if r.error}
    assert errors[images[0]] == "saving the predictions failed (OperationalError: database is locked)"
    assert 999 not in errors or errors[999] == "no image with id 999"  # its result went to the failing callback
    assert results[-1].image_id == images[1] and results[-1].detections and results[-1].error is None


def test_a_worker_that_cannot_start_answers_everyone(tmp_path):
    run = no_hang(lambda: predict_images(tmp_path / "nowhere", [1, 2, 3], threads=1,
                                         loader=lambda p, t: FakePredictor()), timeout=30)
    assert not run.loaded and "cannot open the workspace" in run.reason()
    assert len(run.errors) == 3 and all("cannot open the workspace" in e for e in run.errors)
    svc, results, _ = service(tmp_path / "nowhere")
    fut = svc.start().call(lambda predictor: "never runs")
    with pytest.raises(RuntimeError, match="cannot open the workspace"):
        fut.result(30)
    svc._thread.join(30)
    svc.request(7)  # asked after the thread ended: answered at once, not queued for nobody
    assert svc.wait_idle(5) and [(r.image_id, "cannot open the workspace" in r.error) for r in results] == [(7, True)]
    with pytest.raises(RuntimeError, match="cannot open the workspace"):
        svc.call(lambda predictor: "never runs").result(5)


# --- the command line: predict and lint go on past a bad image, and say which ------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from inference.architectures import Group, build_detector
    from inference.checkpoint import save_checkpoint
    from projects.taxonomy import default_super_taxonomy

    sup = default_super_taxonomy()
    torch.manual_seed(0)
    groups = [Group("all", tuple(sup.names))]
    model = build_detector("single", "tf_efficientdet_lite0", groups, 128)
    meta = {"model": "tf_efficientdet_lite0", "image_size": 128, "layout": "single",
            "groups": [g.to_dict() for g in groups], "super_taxonomy": sup.to_dict(),
            "approach": "tlm", "normalisation": {"mean": [127.5] * 3, "std": [127.5] * 3}, "data": {}, "metrics": {}}
    folder = tmp_path_factory.mktemp("tiny") / "model"
    save_checkpoint(folder, model, meta)
    return folder


def demo_with_an_empty_image(folder: Path, n_images: int = 9) -> tuple[Path, int]:
    from projects.demo import build_demo
    from projects.workspace import Workspace

    build_demo(folder, n_images=n_images, seed=2).close()
    with Workspace.open(folder) as ws:
        bad = ws.image_ids("B")[1]
        path = ws.image_path(ws.image(bad)["path"])
    path.write_bytes(b"")
    return path, bad


def test_labeler_predict_lists_the_bad_image_and_finishes_the_rest(tmp_path, tiny_model, capsys):
    from labeler.cli import main
    from projects.workspace import Workspace

    path, bad = demo_with_an_empty_image(tmp_path / "ws")
    code = no_hang(lambda: main(["predict", str(tmp_path / "ws"), "--project", "B", "--model", str(tiny_model),
                                 "--threads", "1", "--batch", "4"]), timeout=300)
    out, err = capsys.readouterr()
    assert code == 0
    assert f"not predicted: image {bad}: {path}: empty file (0 bytes)" in err
    assert "predicted 2 images with" in out and "1 failed" in out
    assert "Traceback" not in err
    with Workspace.open(tmp_path / "ws") as ws:
        model = ws.latest_model()["id"]
        assert [ws.predictions(i, model) is not None for i in ws.image_ids("B")] == [True, False, True]


def test_labeler_predict_with_no_readable_image_is_one_clean_error(tmp_path, tiny_model, capsys):
    from labeler.cli import main
    from projects.workspace import Workspace

    demo_with_an_empty_image(tmp_path / "ws")
    with Workspace.open(tmp_path / "ws") as ws:
        for i in ws.image_ids("B"):
            ws.image_path(ws.image(i)["path"]).write_bytes(b"")
    code = no_hang(lambda: main(["predict", str(tmp_path / "ws"), "--project", "B", "--model", str(tiny_model),
                                 "--threads", "1"]), timeout=300)
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines()[-1] == "labeler: error: none of the 3 images could be predicted (listed above)"


def test_labeler_lint_lints_the_bad_image_by_the_rules_and_goes_on(tmp_path, tiny_model, capsys):
    from labeler.cli import main

    path, bad = demo_with_an_empty_image(tmp_path / "ws")
    code = no_hang(lambda: main(["lint", str(tmp_path / "ws"), "--project", "B", "--model", str(tiny_model),
                                 "--threads", "1"]), timeout=300)
    out, err = capsys.readouterr()
    assert code == 0
    assert f"not predicted (rules only): image {bad}: {path}: empty file (0 bytes)" in err
    assert "linted 3 images of 'B'" in out
    assert "Traceback" not in err


def test_sigkill_during_labeler_predict_leaves_every_image_predicted_or_not(tmp_path, tiny_model):
    """Killed mid-run: the workspace is intact, each image has all its predictions or none, and the next
    run predicts exactly the rest."""
    from projects.demo import build_demo
    from projects.workspace import Workspace

    build_demo(tmp_path / "ws", n_images=90, seed=3).close()
    db = tmp_path / "ws" / "labeler.sqlite"
    cmd = [sys.executable, "-m", "labeler", "predict", str(tmp_path / "ws"), "--project", "B",
           "--model", str(tiny_model), "--threads", "1", "--batch", "1"]

    def done_count() -> int:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM predicted_images").fetchone()[0]
        except sqlite3.OperationalError:  # tables not there yet, or locked for a moment
            return 0
        finally:
            con.close()

    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while done_count() < 3:
            assert proc.poll() is None, f"predict ended before it could be killed: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "predict made no progress"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
        proc.stderr.close()
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        total = len(ws.image_ids("B"))
        model = ws.latest_model()["id"]
        marked = {r[0] for r in ws.db.execute("SELECT image_id FROM predicted_images WHERE model_id=?", [model])}
        boxed = {r[0] for r in ws.db.execute("SELECT DISTINCT image_id FROM predictions WHERE model_id=?", [model])}
    assert 3 <= len(marked) < total, "killed too late to test anything"
    assert boxed <= marked  # no image holds predictions without being marked predicted (no half-written image)
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{total} images in 'B'; {len(marked)} already predicted" in out.stdout
    assert f"predicted {total - len(marked)} images with" in out.stdout
    with Workspace.open(tmp_path / "ws") as ws:
        assert all(ws.predictions(i, model) is not None for i in ws.image_ids("B"))

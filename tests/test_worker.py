"""The prediction service: priorities, cancellation, the per-model cache, hot swap, broken models.

The model is replaced by a small counting double here (the real predictor is exercised in
tests/test_prelabels.py); what is under test is the service's scheduling and caching.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from inference.worker import PredictionService, Priority, Result
from projects.imaging import write_image
from projects.synthetic import make_scene


@dataclass
class Det:
    node: str
    box: tuple
    score: float


class CountingPredictor:
    def __init__(self, version: str):
        self.version = version
        self.calls = 0

    def predict(self, images: list[np.ndarray]) -> list[list[Det]]:
        self.calls += len(images)
        return [[Det("car", (1.0, 2.0, img.shape[1] / 2, img.shape[0] / 2), 0.9)] for img in images]


def loader(path: Path, threads: int) -> CountingPredictor:
    if "broken" in path.name:
        raise ValueError(f"{path}: not a model")
    return CountingPredictor(path.name)


@pytest.fixture
def images(ws, tmp_path):
    ws.add_project("P")
    folder = ws.folder / "imgs"
    folder.mkdir()
    for i in range(8):
        write_image(folder / f"{i}.png", make_scene(i, size=(96, 64)).image)
    ids = ws.add_images("P", [folder]).added
    return ids


def collect(**kw):
    results: list[Result] = []
    status: list[str] = []
    svc = PredictionService(kw.pop("folder"), on_result=results.append, on_status=status.append,
                            loader=loader, threads=1, **kw)
    return svc, results, status


def test_visible_first_then_prefetch_then_background_and_cancelled_never_run(ws, images):
    ws.register_model("v1", ws.folder / "v1")
    svc, results, _ = collect(folder=ws.folder)
    svc.request_many(images[4:8], Priority.BACKGROUND)
    svc.request(images[1], Priority.PREFETCH)
    svc.request(images[2], Priority.PREFETCH)
    svc.request(images[0], Priority.VISIBLE)
    svc.request(images[5], Priority.VISIBLE)  # upgraded from background
    svc.retarget(images[3], prefetch=[images[1]])  # the annotator moved on: drop prefetch of images[2]
    svc.start()
    assert svc.wait_idle(30)
    svc.stop()
    order = [r.image_id for r in results]
    assert order[:3] == [images[0], images[5], images[3]]
    assert order[3] == images[1]
    assert images[2] not in order
    assert sorted(order[4:]) == [images[4], images[6], images[7]]
    assert all(r.model_version == "v1" and not r.cached for r in results)
    assert results[0].detections[0].node == "car" and results[0].detections[0].box[2] == 48.0


def test_an_image_is_never_predicted_twice_by_the_same_model(ws, images):
    ws.register_model("v1", ws.folder / "v1")
    svc, results, _ = collect(folder=ws.folder)
    svc.start()
    svc.request(images[0])
    svc.wait_idle(30)
    svc.request(images[0])
    svc.wait_idle(30)
    svc.stop()
    assert [r.cached for r in results] == [False, True]
    assert results[0].detections == results[1].detections
    assert svc.forward_passes == 1
    svc2, results2, _ = collect(folder=ws.folder)  # a new session reads the cache from the workspace
    svc2.start()
    svc2.request(images[0])
    svc2.wait_idle(30)
    svc2.stop()
    assert results2[0].cached and svc2.forward_passes == 0


def test_newer_model_is_picked_up_without_restart(ws, images):
    ws.register_model("v1", ws.folder / "v1")
    svc, results, status = collect(folder=ws.folder)
    svc.start()
    svc.request(images[0])
    svc.wait_idle(30)
    ws.register_model("v2", ws.folder / "v2")
    svc.request(images[0])
    svc.wait_idle(30)
    svc.stop()
    assert [r.model_version for r in results] == ["v1", "v2"]
    assert [r.cached for r in results] == [False, False]
    assert any("model v2 ready" in s for s in status)


def test_broken_model_or_image_reports_and_keeps_working(ws, images):
    svc, results, status = collect(folder=ws.folder)
    svc.start()
    svc.request(images[0])
    svc.wait_idle(30)
    assert results[-1].error == "no model" and "no model registered" in status[0]
    ws.register_model("broken", ws.folder / "broken")
    svc.request(images[1])
    svc.wait_idle(30)
    assert results[-1].error == "no model" and any("could not be loaded" in s and "not a model" in s for s in status)
    ws.register_model("v3", ws.folder / "v3")
    (ws.folder / "imgs" / "2.png").write_bytes(b"garbage")
    svc.request(images[2])
    svc.request(images[3])
    svc.wait_idle(30)
    svc.stop()
    bad, good = results[-2], results[-1]
    assert "2.png" in bad.error and bad.detections == []
    assert good.error is None and good.model_version == "v3" and good.detections


def test_jobs_run_in_the_model_thread(ws, images):
    ws.register_model("v1", ws.folder / "v1")
    svc, _, _ = collect(folder=ws.folder)
    svc.start()
    fut = svc.call(lambda predictor: (predictor.version, threading.current_thread().name))
    assert fut.result(30) == ("v1", "labeler-inference")
    failing = svc.call(lambda predictor: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(30)
    svc.stop()

"""The shipped demo model: small, loads against the default super-taxonomy, finds objects in demo scenes."""

from __future__ import annotations

import numpy as np

from inference.checkpoint import read_meta
from inference.predictor import Predictor
from projects.synthetic import make_scene
from projects.taxonomy import default_super_taxonomy, resource_path

DEMO = resource_path("models", "demo")


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_demo_model_is_small_and_described():
    meta = read_meta(DEMO)
    assert (DEMO / "model.safetensors").stat().st_size < 10 * 2**20
    assert meta["approach"] == "tlm" and meta["weights"]["dtype"] == "float16"
    budget = meta["training"]
    assert (budget["steps"] or budget["minutes"] or budget["epochs"]) > 0 and "val" in meta["metrics"]


def test_demo_model_finds_vehicles_in_unseen_demo_scenes():
    p = Predictor.from_checkpoint(DEMO, device="cpu", super_taxonomy=default_super_taxonomy())
    scenes = [make_scene(10_000 + k, "fog") for k in range(6)]  # seeds the demo model never saw
    found = total = 0
    for scene, dets in zip(scenes, p.predict([s.image for s in scenes])):
        for obj in scene.objects:
            if obj.node in ("car", "truck", "bus") and obj.visible > 0.8:
                total += 1
                found += any(d.node == "vehicle" and d.score >= 0.3 and _iou(d.box, obj.box_no_mirrors) >= 0.5
                             for d in dets)
    assert total >= 3
    assert found / total >= 0.6
    blank = p.predict([np.full((320, 512, 3), 128, np.uint8)])[0]
    assert all(d.score < 0.3 for d in blank)

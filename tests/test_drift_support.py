"""Shared by tests/test_drift.py and tests/test_report.py: a stand-in predictor and a stream of synthetic
import runs, so drift and the report are tested in seconds, without training a model."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from projects.imaging import ImageInfo, read_image, write_image
from projects.synthetic import customer_view, make_scene
from projects.values import Detection
from projects.workspace import Workspace

ALL = ("train", "val", "test")


def _key(img: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()


class StandIn:
    """Finds each annotated object with probability `rate[image]` (jittered box, score 0.5-1, the node and its
    ancestors), adds a low-score false positive now and then. Deterministic per image."""

    version = "stand-in"

    def __init__(self, ws: Workspace, rate_of_path: dict[str, float]):
        self.sup = ws.super_taxonomy()
        self.node_names = list(self.sup.names)
        self.truth: dict[str, tuple[list, float]] = {}
        for p in ws.project_names():
            for image_id in ws.image_ids(p):
                row = ws.image(image_id)
                objs = [(a["node"], (a["x1"], a["y1"], a["x2"], a["y2"])) for a in ws.annotations(image_id)]
                self.truth[_key(read_image(ws.image_path(row["path"])))] = (objs, rate_of_path.get(row["path"], 0.9))

    def predict(self, images):
        out = []
        for img in images:
            key = _key(img)
            objs, rate = self.truth[key]
            rng = np.random.default_rng(int(key[:8], 16))
            dets = []
            for node, box in objs:
                if rng.random() < rate:
                    j = rng.normal(0, 1.5, 4)
                    b = (box[0] + j[0], box[1] + j[1], box[2] + j[2], box[3] + j[3])
                    score = float(rng.uniform(0.5, 1.0))
                    dets += [Detection(n, b, score) for n in self.sup.positives(node)]
            if rng.random() < 0.4:
                x, y = rng.uniform(0, 100, 2)
                dets.append(Detection(str(rng.choice(self.node_names)), (x, y, x + 20, y + 20),
                                      float(rng.uniform(0.05, 0.7))))
            out.append(dets)
        return out


def add_batch(ws: Workspace, folder: Path, project: str, domain: str, n: int, seed: int) -> list[str]:
    """One import run of `n` submitted synthetic scenes (one `added_at` for the batch); their stored paths."""
    view = ws.project_view(project)
    labels = {lab["name"]: lab["id"] for lab in ws.labels(project)}
    infos, scenes = [], []
    for k in range(n):
        scene = make_scene(seed + k, domain, size=(192, 120), max_objects=5)
        path = folder / project / f"{domain}_{seed + k}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, scene.image)
        infos.append(ImageInfo(path, hashlib.sha256(path.read_bytes()).hexdigest(), 192, 120))
        scenes.append(scene)
    ids = ws.insert_images(ws.project_id(project), infos).added
    for image_id, scene in zip(ids, scenes):
        for cb in customer_view(scene, view):
            ws.add_annotation(image_id, labels[cb.label], cb.box, provenance="imported", author="t")
        ws.set_status(image_id, "submitted")
    time.sleep(0.005)  # the next batch gets its own import time
    return [ws.image(i)["path"] for i in ids]

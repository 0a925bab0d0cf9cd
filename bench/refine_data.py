"""Held-out evaluation data for the refine and annotator benchmarks: synthetic scenes and BCCD.

Synthetic scenes use seeds far from the demo's (which start at 0), so no training image reappears.
BCCD is read from its VOC files with defusedxml; its test split comes from ImageSets/Main/test.txt.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import defusedxml.ElementTree as ET
import numpy as np

from projects.imaging import read_image
from projects.synthetic import make_scene

BCCD = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "BCCD" / "BCCD"
HELD_OUT_SEED = 900_000
DOMAIN_OF = {"A": "day", "B": "night", "C": "fog"}


@dataclass
class Sample:
    name: str
    image: np.ndarray
    boxes: list[tuple[str, tuple[float, float, float, float]]]  # (class or node, box)


def synthetic(n: int, domain: str = "day", seed: int = HELD_OUT_SEED) -> Iterator[tuple[Sample, object]]:
    for k in range(n):
        scene = make_scene(seed + k, domain)
        yield Sample(f"{domain}-{seed + k}", scene.image, [(o.node, o.box) for o in scene.objects]), scene


def bccd(split: str = "test", limit: int | None = None) -> Iterator[Sample]:
    """BCCD images of Labeler's own stable split (`projects.split`, from each file's SHA-256): the split
    `labeler train` holds out, so a model trained on a BCCD workspace never saw these images."""
    import hashlib

    from projects.split import split_bucket, split_of

    names = sorted(p.stem for p in (BCCD / "JPEGImages").glob("*.jpg")
                   if split_of(split_bucket(hashlib.sha256(p.read_bytes()).hexdigest())) == split)
    for name in names[:limit]:
        root = ET.parse(BCCD / "Annotations" / f"{name}.xml").getroot()
        boxes = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            x1, y1, x2, y2 = (float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            if x2 > x1 and y2 > y1:  # BCCD has two zero-area boxes
                boxes.append((obj.find("name").text, (x1, y1, x2, y2)))
        yield Sample(name, read_image(BCCD / "JPEGImages" / f"{name}.jpg"), boxes)


def perturb(box, rng: np.random.Generator, lo: float = 0.5, hi: float = 0.7, shape=None):
    """A rough box whose IoU with `box` lies in [lo, hi]: each edge moved independently."""
    import torch
    from torchvision.ops import box_iou

    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    for _ in range(1000):
        d = rng.uniform(-0.3, 0.3, 4) * np.array([w, h, w, h])
        cand = (x1 + d[0], y1 + d[1], x2 + d[2], y2 + d[3])
        if shape is not None:
            H, W = shape[:2]
            cand = (max(0.0, cand[0]), max(0.0, cand[1]), min(float(W), cand[2]), min(float(H), cand[3]))
        if cand[2] - cand[0] < 2 or cand[3] - cand[1] < 2:
            continue
        iou = float(box_iou(torch.tensor([cand]), torch.tensor([box], dtype=torch.float64))[0, 0])
        if lo <= iou <= hi:
            return cand, iou
    return None, 0.0


def click_in(box, rng: np.random.Generator) -> tuple[float, float]:
    """A click in the central half of the box, where people click on an object."""
    x1, y1, x2, y2 = box
    return (float(rng.uniform(x1 + 0.25 * (x2 - x1), x2 - 0.25 * (x2 - x1))),
            float(rng.uniform(y1 + 0.25 * (y2 - y1), y2 - 0.25 * (y2 - y1))))

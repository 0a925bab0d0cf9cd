"""Click-to-refine and box-to-refine: turn a click or a rough box into a tight box proposal.

Three paths, cheapest first:

1. **cache** — the image's low-threshold detections (already in the predictions table): the
   detection under the click, or the one matching the rough box best by IoU × score;
2. **redetect** — a forward pass on a crop around the click or the rough box, so small objects are
   seen at a higher resolution than in the whole-image pass; with tight boxes (a `CropModel`,
   inference/tighten.py) the crop around a rough box is resampled so the box has the size objects had in
   training, which answers far more rough boxes than the crop grown by half the box (bench/bench_refine.py);
3. **grabcut** — OpenCV's GrabCut inside the rough box, for objects the model does not know.

Every path returns a `Proposal` that the UI shows for a one-key accept; nothing here edits an
annotation. Only nodes the current project labels are considered (`allowed_nodes`).
Qt-free and torch-free: the model is reached through a `predict(crop) -> detections` callable, which
the GUI runs in the inference thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

from inference.tighten import CropModel
from projects.values import Box

PredictFn = Callable[[np.ndarray], Sequence[Any]]  # crop (RGB) -> detections with .node .box .score

MIN_IOU = 0.3  # a detection further than this from the rough box is a different object


@dataclass(frozen=True)
class Proposal:
    box: Box
    node: str | None
    score: float
    source: str  # "cache", "redetect" or "grabcut"


def _allowed(dets: Iterable[Any], allowed_nodes: set[str] | None, min_score: float) -> list[Any]:
    return [d for d in dets if d.score >= min_score and (allowed_nodes is None or d.node in allowed_nodes)]


def _contains(box: Sequence[float], x: float, y: float) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def from_click(point: tuple[float, float], detections: Iterable[Any], allowed_nodes: set[str] | None = None,
               min_score: float = 0.15) -> Proposal | None:
    """The innermost confident detection under the click, or None.

    Among the detections containing the click whose score is at least half the best one, the smallest
    wins: a click on a pedestrian in front of a bus means the pedestrian, although the bus box also
    contains the click and may score higher."""
    x, y = point
    hits = [d for d in _allowed(detections, allowed_nodes, min_score) if _contains(d.box, x, y)]
    if not hits:
        return None
    top = max(d.score for d in hits)
    best = min((d for d in hits if d.score >= 0.5 * top),
               key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
    return Proposal(tuple(map(float, best.box)), best.node, float(best.score), "cache")


def best_match(rough: Box, detections: Iterable[Any], allowed_nodes: set[str] | None = None,
               min_score: float = 0.1, min_iou: float = MIN_IOU) -> tuple[Any, float] | None:
    """The detection maximising IoU × score with the rough box (IoU ≥ min_iou), and that IoU."""
    dets = _allowed(detections, allowed_nodes, min_score)
    if not dets:
        return None
    ious = box_iou(torch.tensor([rough], dtype=torch.float32),
                   torch.tensor([list(d.box) for d in dets], dtype=torch.float32))[0].numpy()
    scores = ious * np.array([d.score for d in dets])
    i = int(scores.argmax())
    if ious[i] < min_iou:
        return None
    return dets[i], float(ious[i])


def from_box(rough: Box, detections: Iterable[Any], allowed_nodes: set[str] | None = None,
             min_score: float = 0.1) -> Proposal | None:
    match = best_match(rough, detections, allowed_nodes, min_score)
    if match is None:
        return None
    det, _ = match
    return Proposal(tuple(map(float, det.box)), det.node, float(det.score), "cache")


def crop_window(image_shape: tuple[int, ...], box: Box, grow: float = 0.5, min_side: int = 64) -> Box:
    """The box grown by `grow` of its size on each side (at least min_side), clipped to the image."""
    H, W = image_shape[:2]
    x1, y1, x2, y2 = box
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    side_w, side_h = max(w * (1 + 2 * grow), min_side), max(h * (1 + 2 * grow), min_side)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return (max(0.0, cx - side_w / 2), max(0.0, cy - side_h / 2), min(float(W), cx + side_w / 2),
            min(float(H), cy + side_h / 2))


@dataclass(frozen=True)
class _Shifted:
    node: str
    box: Box
    score: float


def detect_in_crop(image: np.ndarray, window: Box, predict: PredictFn) -> list[_Shifted]:
    """Run the model on a crop and map its boxes back into image coordinates."""
    x0, y0, x1, y1 = (int(round(v)) for v in window)
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    if crop.size == 0:
        return []
    return [_Shifted(d.node, (d.box[0] + x0, d.box[1] + y0, d.box[2] + x0, d.box[3] + y0), float(d.score))
            for d in predict(crop)]


def click_redetect(image: np.ndarray, point: tuple[float, float], predict: PredictFn,
                   allowed_nodes: set[str] | None = None, side: float | None = None) -> Proposal | None:
    """A forward pass on a square crop centred on the click (a third of the shorter image side)."""
    H, W = image.shape[:2]
    s = side or max(96.0, min(H, W) / 3)
    x, y = point
    window = crop_window(image.shape, (x - s / 2, y - s / 2, x + s / 2, y + s / 2), grow=0.0)
    found = from_click(point, detect_in_crop(image, window, predict), allowed_nodes)
    return None if found is None else Proposal(found.box, found.node, found.score, "redetect")


def box_redetect(image: np.ndarray, rough: Box, predict: PredictFn,
                 allowed_nodes: set[str] | None = None) -> Proposal | None:
    dets = detect_in_crop(image, crop_window(image.shape, rough), predict)
    found = from_box(rough, dets, allowed_nodes)
    return None if found is None else Proposal(found.box, found.node, found.score, "redetect")


def box_redetect_at_scale(image: np.ndarray, rough: Box, model: CropModel,
                          allowed_nodes: set[str] | None = None) -> Proposal | None:
    """A forward pass on the rough box's training-scale window; the detection maximising IoU x score wins."""
    dets = [_Shifted(n, b, s) for n, b, s in model.around(image, rough)]
    found = from_box(rough, dets, allowed_nodes)
    return None if found is None else Proposal(found.box, found.node, found.score, "redetect")


def grabcut(image: np.ndarray, rough: Box, iterations: int = 3) -> Proposal | None:
    """Foreground extent inside the rough box by GrabCut: for objects the model does not know."""
    H, W = image.shape[:2]
    wx0, wy0, wx1, wy1 = (int(round(v)) for v in crop_window(image.shape, rough, grow=0.25, min_side=16))
    crop = np.ascontiguousarray(cv2.cvtColor(image[wy0:wy1, wx0:wx1], cv2.COLOR_RGB2BGR))
    rx1, ry1 = max(1, int(rough[0]) - wx0), max(1, int(rough[1]) - wy0)
    rx2, ry2 = min(crop.shape[1] - 2, int(round(rough[2])) - wx0), min(crop.shape[0] - 2, int(round(rough[3])) - wy0)
    if rx2 - rx1 < 3 or ry2 - ry1 < 3:
        return None
    mask = np.zeros(crop.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(crop, mask, (rx1, ry1, rx2 - rx1, ry2 - ry1), bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        return None
    fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    ys, xs = np.nonzero(fg)
    if len(xs) < 4:
        return None
    box = (float(xs.min() + wx0), float(ys.min() + wy0), float(min(W, xs.max() + 1 + wx0)),
           float(min(H, ys.max() + 1 + wy0)))
    return Proposal(box, None, 0.0, "grabcut")


def refine_box(image: np.ndarray, rough: Box, detections: Iterable[Any], predict: PredictFn | None,
               allowed_nodes: set[str] | None = None, use_grabcut: bool = True,
               tight: CropModel | None = None) -> Proposal | None:
    """Cache, then crop-and-redetect (on a crop at the training scale with `tight`), then GrabCut."""
    found = from_box(rough, detections, allowed_nodes)
    if found is None and tight is not None:
        found = box_redetect_at_scale(image, rough, tight, allowed_nodes)
    elif found is None and predict is not None:
        found = box_redetect(image, rough, predict, allowed_nodes)
    if found is None and use_grabcut:
        found = grabcut(image, rough)
    return found


def refine_click(image: np.ndarray, point: tuple[float, float], detections: Iterable[Any],
                 predict: PredictFn | None, allowed_nodes: set[str] | None = None) -> Proposal | None:
    """Cache, then a forward pass on a crop around the click."""
    found = from_click(point, detections, allowed_nodes)
    if found is None and predict is not None:
        found = click_redetect(image, point, predict, allowed_nodes)
    return found

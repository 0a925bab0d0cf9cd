"""Tight boxes: each confident pre-label's box averaged with the model's box for the same object in the mirrored
image, and rough boxes re-detected on a crop resampled to the training scale.

Why: only about a sixth of the matched pre-labels were within IoU 0.9 of the truth (docs/benchmarks/decoding.md),
and the edges the model places are noisy more than biased: a few pixels either way, differently at each
position of the object on effdet's anchor grid. Measured side by side on synthetic scenes and BCCD
(bench/bench_tight.py, docs/benchmarks/prelabels.md), three passes were tried:

- **re-detection on a crop at the training scale** (a square window around the box, resampled so the box has
  the size objects had in training, the same node's best-overlapping detection taking its place) made the
  pre-labels *less* tight on both data sets: the crop shows the object with other context, padding and at
  another place on the grid, a new draw of the same noise without the whole image's context. It stays where
  it helps: a rough box that no cached detection matches is re-detected this way (`CropModel.around`), which
  answers far more often than the old crop grown by half the box's size;
- **snapping edges to image gradients** helped on the synthetic scenes' crisp edges and hurt on BCCD, whose
  boxes do not follow the cell membranes: not used;
- **mirror averaging** (this module's `tighten`): one more forward pass on the horizontally mirrored image,
  and each confident detection's box averaged, weighted by score, with the same node's best-overlapping box
  there (mapped back). The two draws of the noise are partly independent, so the average is tighter on both
  data sets, for one extra forward pass per image (batched with the image's own).

Qt-free. The model is reached through a `predict(images) -> detections per image` callable (the Predictor's
`predict`), so the pass runs wherever that runs: the inference worker's thread, never the GUI thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from projects.values import Box

PredictMany = Callable[[list[np.ndarray]], list[Sequence[Any]]]  # images (RGB) -> detections per image
Found = tuple[str, Box, float]  # (node, box in image pixels, score)


@dataclass(frozen=True)
class TightOptions:
    """`min_score`: detections below it keep their box (and an image with none above it gets no mirror pass);
    `min_iou`: a mirrored detection further than this from the box is another object (0.55 let a neighbour's box
    in now and then and cost a point of mAP@0.5; 0.7 kept it and almost all of the gain); `target`: a
    re-detected rough box's longer side in model input pixels, as a share of the input size."""

    min_score: float = 0.05
    min_iou: float = 0.7
    target: float = 0.25


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def best_same(box: Box, node: str | None, found: Sequence[Found], min_iou: float) -> tuple[Box, float] | None:
    """The detection of `node` (any node when None) overlapping `box` best, at IoU >= min_iou: (box, score)."""
    best, best_iou = None, min_iou
    for n, b, s in found:
        if node is not None and n != node:
            continue
        iou = _iou(box, b)
        if iou >= best_iou:
            best, best_iou = (b, s), iou
    return best


# --- mirror averaging (pre-labels) ---------------------------------------------------------------------------
def mirror(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def unmirror(detections: Sequence[Any], width: int) -> list[Found]:
    """Detections on the mirrored image, in the original image's pixels."""
    return [(d.node, (width - d.box[2], d.box[1], width - d.box[0], d.box[3]), float(d.score)) for d in detections]


def average_with(detections: Sequence[Any], mirrored: Sequence[Found], options: TightOptions | None = None
                 ) -> list[Any]:
    """Each detection scoring >= min_score with its box averaged (weights: the two scores) with the same node's
    best-overlapping mirrored box; node, score and order are kept, and one without a partner keeps its box.
    `detections` are `Detection`-like dataclasses (replaced with `dataclasses.replace`)."""
    o = options or TightOptions()
    out = list(detections)
    for i, d in enumerate(detections):
        if d.score < o.min_score:
            continue
        match = best_same(tuple(d.box), d.node, mirrored, o.min_iou)
        if match is None:
            continue
        box, score = match
        w0, w1 = float(d.score), float(score)
        out[i] = replace(d, box=tuple((w0 * a + w1 * b) / (w0 + w1) for a, b in zip(d.box, box)))
    return out


def tighten(images: Sequence[np.ndarray], detections: Sequence[Sequence[Any]], predict: PredictMany,
            options: TightOptions | None = None) -> list[list[Any]]:
    """The detections of each image with tighter boxes: one forward pass on the mirrored images (one batch)."""
    o = options or TightOptions()
    todo = [k for k, dets in enumerate(detections) if any(d.score >= o.min_score for d in dets)]
    out = [list(d) for d in detections]
    if not todo:
        return out
    answers = predict([mirror(images[k]) for k in todo])
    for k, found in zip(todo, answers, strict=True):
        out[k] = average_with(detections[k], unmirror(found, images[k].shape[1]), o)
    return out


# --- re-detection on a crop at the training scale (refine) -----------------------------------------------------
def window_for(box: Box, input_size: int, target: float) -> tuple[float, float, float]:
    """(x0, y0, side) of the square window, centred on the box, whose resampling to `input_size` pixels makes
    the box's longer side `target * input_size` pixels."""
    x1, y1, x2, y2 = box
    longest = max(x2 - x1, y2 - y1, 1.0)
    side = longest / target
    return (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2, side


def cut(image: np.ndarray, x0: float, y0: float, side: float, input_size: int,
        fill: Sequence[float] = (127.5, 127.5, 127.5)) -> tuple[np.ndarray, float, float, float]:
    """The window resampled to input_size x input_size (padded with `fill` where it leaves the image), and the
    mapping back: (crop, x0, y0, scale) with image = crop / scale + (x0, y0) for box edges.

    The window's origin and side are whole pixels and the resampling is `cv2.resize` of the padded window
    (pixel centres aligned, area averaging when shrinking), as the letterbox does, so an edge between two
    pixels lands exactly `scale` times further from the window's corner."""
    h, w = image.shape[:2]
    x0, y0 = int(np.floor(x0)), int(np.floor(y0))
    side = max(1, int(np.ceil(side)))
    window = np.empty((side, side, 3), np.uint8)
    window[:] = np.clip(np.round(fill), 0, 255).astype(np.uint8)
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    if ix1 > ix0 and iy1 > iy0:
        window[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = image[iy0:iy1, ix0:ix1]
    scale = input_size / side
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    crop = cv2.resize(window, (input_size, input_size), interpolation=interp) if side != input_size else window
    return crop, float(x0), float(y0), scale


def redetect(image: np.ndarray, boxes: Sequence[Box], predict: PredictMany, input_size: int, target: float,
             fill: Sequence[float] = (127.5, 127.5, 127.5)) -> list[list[Found]]:
    """For each box, the detections of a forward pass on its training-scale window, in image pixels (one batch)."""
    if not boxes:
        return []
    cuts = [cut(image, *window_for(b, input_size, target), input_size, fill) for b in boxes]
    return [[(d.node, (d.box[0] / s + x0, d.box[1] / s + y0, d.box[2] / s + x0, d.box[3] / s + y0), float(d.score))
             for d in dets] for (_, x0, y0, s), dets in zip(cuts, predict([c[0] for c in cuts]), strict=True)]


@dataclass(frozen=True)
class CropModel:
    """What the passes need of a model: its batch predict, input size and padding value."""

    predict: PredictMany
    input_size: int
    fill: tuple[float, float, float] = (127.5, 127.5, 127.5)
    options: TightOptions = TightOptions()

    @classmethod
    def of(cls, predictor: Any, options: TightOptions | None = None) -> CropModel | None:
        """The predictor's; None for no predictor or one that does not say its input size (a test double)."""
        size = getattr(predictor, "image_size", None)
        if predictor is None or not size:
            return None
        return cls(predictor.predict, int(size), tuple(getattr(predictor, "mean", (127.5, 127.5, 127.5))),
                   options or TightOptions())

    def tighten(self, images: Sequence[np.ndarray], detections: Sequence[Sequence[Any]]) -> list[list[Any]]:
        return tighten(images, detections, self.predict, self.options)

    def around(self, image: np.ndarray, box: Box) -> list[Found]:
        """Every detection of one forward pass on the box's training-scale window, in image pixels."""
        return redetect(image, [box], self.predict, self.input_size, self.options.target, self.fill)[0]

"""Turning a detector's raw scores into the chance that a prediction is a real object.

A focal-loss EfficientDet is shy: on the demo's synthetic scenes, predictions at 0.3-0.4 are real objects
about half the time and those above 0.5 nine times in ten, and a model trained longer or on other data
has another curve. The linter's thresholds ("a prediction this likely to be real, with no box on it, is a
missed object") should mean the same thing whatever the model, so raw scores are mapped to probabilities
first, by isotonic regression (scikit-learn) on the project's own labeled images: a prediction is a
positive when it matches an annotation of its label (IoU >= 0.5, one-to-one, best score first). The labels
being linted contain some mistakes, which makes the estimate a little conservative (a real object left
unboxed counts as a false prediction), the same trade cleanlab makes when it takes its per-class
thresholds from the data set under review.

Too little data (fewer than `min_each` matched or unmatched predictions) gives no calibration: the raw
scores are used as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.isotonic import IsotonicRegression
from torchvision.ops import box_iou

from inference.lint_types import Annotated, Proposal

MATCH_IOU = 0.5


@dataclass(frozen=True)
class ScoreCalibration:
    """A monotone map from raw score to P(real object), kept as the fitted step function's knots."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    positives: int
    negatives: int

    def __call__(self, score: float) -> float:
        return float(np.interp(score, self.x, self.y))

    def to_dict(self) -> dict:
        return {"x": list(self.x), "y": list(self.y), "positives": self.positives, "negatives": self.negatives}


def match_flags(annotations: Sequence[Annotated], proposals: Sequence[Proposal]) -> list[bool]:
    """For each proposal: does it match a distinct annotation of its label (IoU >= 0.5, best score first)?"""
    if not proposals:
        return []
    if not annotations:
        return [False] * len(proposals)
    ious = box_iou(torch.tensor([p.box for p in proposals], dtype=torch.float64),
                   torch.tensor([a.box for a in annotations], dtype=torch.float64)).numpy()
    taken: set[int] = set()
    flags = [False] * len(proposals)
    for j in sorted(range(len(proposals)), key=lambda k: -proposals[k].score):
        cands = [(ious[j, i], i) for i, a in enumerate(annotations)
                 if i not in taken and a.label == proposals[j].label and ious[j, i] >= MATCH_IOU]
        if cands:
            taken.add(max(cands)[1])
            flags[j] = True
    return flags


def fit_calibration(pairs: Iterable[tuple[Sequence[Annotated], Sequence[Proposal]]],
                    min_each: int = 20) -> ScoreCalibration | None:
    """Fit on (annotations, proposals) of labeled images; None when there is too little data."""
    scores, labels = [], []
    for anns, props in pairs:
        for p, ok in zip(props, match_flags(anns, props)):
            scores.append(p.score)
            labels.append(ok)
    pos = int(sum(labels))
    neg = len(labels) - pos
    if pos < min_each or neg < min_each:
        return None
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64))
    return ScoreCalibration(tuple(float(v) for v in iso.X_thresholds_), tuple(float(v) for v in iso.y_thresholds_),
                            pos, neg)

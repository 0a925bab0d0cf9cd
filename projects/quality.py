"""Annotator quality: gold images scored against their reference annotations.

A project marks some images as **gold**: their reference boxes are kept apart from the live annotations
(`Workspace.mark_gold`, optionally re-queueing the image so the next annotator labels it blind). When an
annotator submits a gold image, `score_submission` matches their boxes to the reference one-to-one, same
label, IoU >= 0.5 (the Hungarian assignment that maximises the summed IoU, so a crowd of overlapping boxes
is matched as well as it can be, not greedily), and stores precision, recall and the mean IoU of the matched
pairs. Undefined ratios stay None (no box drawn: precision is undefined, not 0 or 1) so summaries do not
invent figures. Qt-free and torch-free: `labeler quality` starts fast.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import fmean
from typing import Any

import numpy as np

from projects.workspace import Workspace, default_author

MATCH_IOU = 0.5


@dataclass(frozen=True)
class QualityScore:
    precision: float | None  # matched / drawn; None when nothing was drawn
    recall: float | None  # matched / reference; None when the reference is empty
    mean_iou: float | None  # over matched pairs; None when nothing matched
    tp: int
    fp: int
    fn: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of x1, y1, x2, y2 boxes (len(a), len(b)), through pycocotools' C implementation."""
    from pycocotools import mask as coco_mask  # imported here: every `labeler` command loads this module

    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return np.asarray(coco_mask.iou(_xywh(a), _xywh(b), [0] * len(b)), dtype=np.float64).reshape(len(a), len(b))


def _xywh(x: np.ndarray) -> np.ndarray:
    return np.column_stack([x[:, 0], x[:, 1], x[:, 2] - x[:, 0], x[:, 3] - x[:, 1]]).astype(np.float64)


def _boxes(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    return np.array([[r["x1"], r["y1"], r["x2"], r["y2"]] for r in rows], dtype=np.float64).reshape(-1, 4)


def score_annotations(drawn: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]],
                      match_iou: float = MATCH_IOU) -> QualityScore:
    """Score drawn boxes against reference boxes (dicts with label and x1..y2): a drawn box counts when it
    is matched one-to-one to a reference box of the same label with IoU >= `match_iou`."""
    from scipy.optimize import linear_sum_assignment  # imported here: every `labeler` command loads this module

    ious = box_iou(_boxes(drawn), _boxes(reference))
    same = np.array([[d["label"] == r["label"] for r in reference] for d in drawn], dtype=bool).reshape(ious.shape)
    valid = same & (ious >= match_iou)
    matched: list[float] = []
    if valid.any():
        rows, cols = linear_sum_assignment(np.where(valid, ious, 0.0), maximize=True)
        matched = [float(ious[r, c]) for r, c in zip(rows, cols) if valid[r, c]]
    tp = len(matched)
    fp, fn = len(drawn) - tp, len(reference) - tp
    return QualityScore(precision=tp / len(drawn) if len(drawn) else None,
                        recall=tp / len(reference) if len(reference) else None,
                        mean_iou=fmean(matched) if matched else None, tp=tp, fp=fp, fn=fn)


def submitter(ws: Workspace, image_id: int) -> str:
    """Who submitted the image: the author of most of its live boxes, else this session's user."""
    authors = Counter(a["author"] for a in ws.annotations(image_id))
    return authors.most_common(1)[0][0] if authors else default_author()


def score_submission(ws: Workspace, image_id: int, author: str | None = None) -> QualityScore | None:
    """Call when an image is submitted: if it is gold, score its live annotations against the reference,
    store the score under `author` (default: `submitter`) and return it; None for a non-gold image."""
    reference = ws.gold_reference(image_id)
    if reference is None:
        return None
    score = score_annotations(ws.annotations(image_id), reference)
    ws.add_quality_score(image_id, author or submitter(ws, image_id), score.precision, score.recall,
                         score.mean_iou, score.tp, score.fp, score.fn)
    return score


def annotator_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group stored scores (oldest first, as `Workspace.quality_scores` returns them) by annotator: the
    scores over all their gold images, micro-averaged (from the summed counts and matched pairs, so a
    one-box image does not weigh as much as a crowded one), and the per-image history for the trend."""
    by_author: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_author.setdefault(r["author"], []).append(r)
    out = []
    for author in sorted(by_author):
        hist = by_author[author]
        tp, fp, fn = (sum(r[k] for r in hist) for k in ("tp", "fp", "fn"))
        out.append({
            "author": author, "gold_images": len(hist),
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "mean_iou": sum(r["mean_iou"] * r["tp"] for r in hist if r["mean_iou"] is not None) / tp if tp else None,
            "history": [{k: r[k] for k in ("created_at", "project", "image_id", "path", "precision", "recall",
                                           "mean_iou", "tp", "fp", "fn")} for r in hist],
        })
    return out

"""The one place that talks to cleanlab: ObjectLab per-box label-quality scores for one image.

We use the scoring functions of `cleanlab.object_detection.rank` (`compute_overlooked_box_scores`,
`compute_swap_box_scores`, `compute_badloc_box_scores`, `pool_box_scores_per_image`), not
`cleanlab.object_detection.filter.find_label_issues`: the latter calls `np.in1d`, which numpy 2.4 removed,
and its per-class thresholds come from an AP computed over a whole data set, while the linter judges one
image at submit time. Scores are *qualities*: 1 = the label looks right, 0 = it looks wrong.

Two departures from cleanlab's defaults, both through its documented `auxiliary_inputs`:

* **Thresholds.** cleanlab only trusts predictions above 0.95 (overlooked, swap) or 0.5 (badly located);
  a small EfficientDet trained with focal loss is rarely that confident, so the thresholds are ours
  (`inference.lint.LintConfig`).
* **"Covered".** cleanlab never calls a prediction overlooked when *any* annotated box touches it (IoU > 0).
  In crowded images (blood cells, pedestrian groups) every missed object touches a neighbour, so nothing
  would ever be found. cleanlab recomputes that overlap itself (the matrix in `auxiliary_inputs` is not
  used for this test), so predictions that only touch annotations (IoU < `touch_iou`) and that cleanlab
  left unjudged are scored here with cleanlab's own overlooked rule (`_fill_touching`).

The IoU matrix comes from `torchvision.ops.box_iou`; the similarity is cleanlab's own
(ALPHA * IoU + (1 - ALPHA) * exp(-EUC_FACTOR * centre distance)), with its constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from cleanlab.internal.constants import (
    ALPHA,
    CUSTOM_SCORE_WEIGHT_BADLOC,
    CUSTOM_SCORE_WEIGHT_OVERLOOKED,
    CUSTOM_SCORE_WEIGHT_SWAP,
    EUC_FACTOR,
    TEMPERATURE,
    TINY_VALUE,
)
from cleanlab.object_detection.rank import (
    compute_badloc_box_scores,
    compute_overlooked_box_scores,
    compute_swap_box_scores,
    pool_box_scores_per_image,
)
from torchvision.ops import box_iou


@dataclass(frozen=True)
class BoxQualities:
    """cleanlab's per-box qualities for one image (NaN: the box was not judged, e.g. not confident)."""

    overlooked: np.ndarray  # per prediction: low = an object the annotations seem to miss
    swap: np.ndarray  # per annotation: low = a confident prediction of another class sits on it
    badloc: np.ndarray  # per annotation: low = the best same-class prediction disagrees on the box
    iou: np.ndarray  # (annotations, predictions), the plain IoU
    image_quality: float  # cleanlab's aggregate for the image (weighted geometric mean of the pooled kinds)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return box_iou(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)).numpy()


def _centre_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ca = np.column_stack([(a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2])
    cb = np.column_stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2])
    dist = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2)
    return np.exp(-dist * EUC_FACTOR)


def _fill_touching(overlooked: np.ndarray, aux: dict, min_score: float, touch_iou: float) -> None:
    """cleanlab leaves a confident prediction unjudged (NaN) when any annotation touches it; judge those that
    only touch (every IoU < `touch_iou`) with cleanlab's own rule: the best similarity to an annotation of the
    same class, or `min_possible_similarity * (1 - p)` when the image has none of that class."""
    iou, sim, lab_c = aux["iou_matrix"], aux["similarity_matrix"], aux["lab_labels"]
    for j, (k, p) in enumerate(zip(aux["pred_labels"], aux["pred_label_probs"])):
        if not np.isnan(overlooked[j]) or p < min_score or (iou.shape[0] and iou[:, j].max() >= touch_iou):
            continue
        same = sim[lab_c == k, j]
        overlooked[j] = same.max() if same.size else aux["min_possible_similarity"] * (1 - p)


def box_qualities(label_boxes: np.ndarray, label_classes: np.ndarray, pred_boxes: np.ndarray,
                  pred_classes: np.ndarray, pred_scores: np.ndarray, *, missed_min_score: float,
                  swap_min_score: float, badloc_min_score: float, touch_iou: float) -> BoxQualities:
    """ObjectLab qualities for one image. Boxes are (n, 4) x1, y1, x2, y2 pixels, classes integer ids
    (the project's labels), `pred_scores` the model's confidence of each prediction's class."""
    lab_b = np.asarray(label_boxes, dtype=np.float64).reshape(-1, 4)
    pred_b = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    lab_c = np.asarray(label_classes, dtype=np.int64).reshape(-1)
    pred_c = np.asarray(pred_classes, dtype=np.int64).reshape(-1)
    pred_p = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    iou = _iou(lab_b, pred_b)
    if iou.size:
        similarity = ALPHA * iou + (1 - ALPHA) * _centre_similarity(lab_b, pred_b)
        nonzero = similarity[np.nonzero(similarity)]
        min_similarity = float(nonzero.min()) if nonzero.size else 1.0
    else:
        similarity, min_similarity = np.zeros_like(iou), 1.0
    aux = {"pred_labels": pred_c, "pred_label_probs": pred_p, "pred_bboxes": pred_b, "lab_labels": lab_c,
           "lab_bboxes": lab_b, "similarity_matrix": similarity, "iou_matrix": iou,
           "min_possible_similarity": min_similarity}
    overlooked = compute_overlooked_box_scores(high_probability_threshold=missed_min_score,
                                               auxiliary_inputs=[aux])[0]
    _fill_touching(overlooked, aux, missed_min_score, touch_iou)
    swap = compute_swap_box_scores(high_probability_threshold=swap_min_score, overlapping_label_check=False,
                                   auxiliary_inputs=[aux])[0]
    badloc = compute_badloc_box_scores(low_probability_threshold=badloc_min_score, auxiliary_inputs=[aux])[0]
    pooled = {k: float(pool_box_scores_per_image([np.asarray(v, dtype=np.float64)], temperature=TEMPERATURE)[0])
              for k, v in (("overlooked", overlooked), ("swap", swap), ("badloc", badloc))}
    log_q = (CUSTOM_SCORE_WEIGHT_OVERLOOKED * np.log(TINY_VALUE + pooled["overlooked"])
             + CUSTOM_SCORE_WEIGHT_SWAP * np.log(TINY_VALUE + pooled["swap"])
             + CUSTOM_SCORE_WEIGHT_BADLOC * np.log(TINY_VALUE + pooled["badloc"]))
    return BoxQualities(np.asarray(overlooked, dtype=np.float64), np.asarray(swap, dtype=np.float64),
                        np.asarray(badloc, dtype=np.float64), iou, float(np.exp(log_q)))

"""Pre-labels in the customer's taxonomy: detections in super-taxonomy nodes -> proposals in labels.

A detection of node *n* is shown under the label of the deepest node on *n*'s path to the root that
the project names (`ProjectView.label_for`); detections with no such label are never shown (a
people-only customer never sees vehicles). Because several nodes can map to one label (`car`, `truck`
and `vehicle` all become `Vehicle` for a vehicles-only customer), proposals are de-duplicated per label
with NMS after the mapping.

One proposal per object: two proposals of different labels that overlap at IoU ≥ `same_object_iou` (0.7)
are one object named twice (a `Car` 0.51 and a `Truck` 0.63 on one vehicle): the better score stays. A
proposal that an existing annotation already covers is hidden — IoU ≥ `covered_iou` (0.5, the detector's own
NMS threshold) with a box of the same label, or ≥ `same_object_iou` with a box of any label: it has been
accepted, drawn or named otherwise already. Detections the annotator has `answered` (accepted, adjusted or
rejected; the stored decisions of this model version) are hidden too, after the NMS, so that a rejected
proposal does not make way for a weaker duplicate of the same object.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from projects.quality import box_iou
from projects.taxonomy import ProjectView
from projects.values import Box


@dataclass(frozen=True)
class Proposal:
    key: int  # stable within one image's proposal list (index into the model's detections)
    label: str
    node: str  # the detected node (finer than or equal to the label's node)
    box: Box
    score: float


def customer_proposals(detections: Sequence[Any], view: ProjectView, annotations: Iterable[Any] = (),
                       min_score: float = 0.05, nms_iou: float = 0.5, covered_iou: float = 0.5,
                       same_object_iou: float = 0.7, answered: Iterable[tuple[str, Box]] = ()) -> list[Proposal]:
    """Proposals for one image, best first. `detections` have .node .box .score (or are dicts);
    `annotations` are the image's live annotations with a label name and box (dicts with label, x1..y2);
    `answered` are (node, box) of detections already accepted, adjusted or rejected."""
    mapped: list[Proposal] = []
    for key, d in enumerate(detections):
        node, box, score = _fields(d)
        if score < min_score:
            continue
        label = view.label_for(node)
        if label is None:
            continue
        mapped.append(Proposal(key, label.name, node, box, score))
    if not mapped:
        return []
    kept = [mapped[i] for i in _nms_per_label(mapped, nms_iou, same_object_iou)]
    answered = list(answered)
    kept = [p for p in kept if not any(_same_detection(p, node, box) for node, box in answered)]
    ann = [(a["label"], (a["x1"], a["y1"], a["x2"], a["y2"])) for a in annotations]
    if ann and kept:
        ious = box_iou(np.array([p.box for p in kept], dtype=np.float64),
                       np.array([b for _, b in ann], dtype=np.float64))
        kept = [p for i, p in enumerate(kept)
                if not any(ious[i, j] >= same_object_iou or (ious[i, j] >= covered_iou and ann[j][0] == p.label)
                           for j in range(len(ann)))]
    return kept


def _same_detection(p: Proposal, node: str, box: Box, tolerance: float = 0.5) -> bool:
    """A stored decision names this detection: same node, every edge within half a pixel."""
    return p.node == node and all(abs(a - b) <= tolerance for a, b in zip(p.box, box))


def _nms_per_label(proposals: Sequence[Proposal], iou: float, any_label_iou: float = 1.0) -> list[int]:
    """Indices kept by non-maximum suppression within each label (as torchvision's `batched_nms`), and across
    labels at `any_label_iou`, best score first. NumPy, not torch: this runs on the GUI thread at every edit,
    and the window must not import torch there (the prediction worker imports it, after the window has
    painted)."""
    boxes = np.array([p.box for p in proposals], dtype=np.float64)
    labels = np.array([p.label for p in proposals])
    ious = box_iou(boxes, boxes)
    suppressed = np.zeros(len(proposals), dtype=bool)
    kept = []
    for i in sorted(range(len(proposals)), key=lambda k: -proposals[k].score):
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= ((ious[i] > iou) & (labels == labels[i])) | (ious[i] >= any_label_iou)
    return kept


def _fields(d: Any) -> tuple[str, Box, float]:
    if isinstance(d, dict):
        return d["node"], (d["x1"], d["y1"], d["x2"], d["y2"]), float(d["score"])
    return d.node, tuple(float(v) for v in d.box), float(d.score)

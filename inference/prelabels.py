"""Pre-labels in the customer's taxonomy: detections in super-taxonomy nodes -> proposals in labels.

A detection of node *n* is shown under the label of the deepest node on *n*'s path to the root that
the project names (`ProjectView.label_for`); detections with no such label are never shown (a
people-only customer never sees vehicles). Because several nodes can map to one label (`car`, `truck`
and `vehicle` all become `Vehicle` for a vehicles-only customer), proposals are de-duplicated per label
with NMS after the mapping. A proposal that an existing annotation of the same label already covers
(IoU ≥ `covered_iou`) is hidden: it has been accepted or drawn already.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.ops import batched_nms, box_iou

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
                       min_score: float = 0.05, nms_iou: float = 0.5, covered_iou: float = 0.7) -> list[Proposal]:
    """Proposals for one image, best first. `detections` have .node .box .score (or are dicts);
    `annotations` are the image's live annotations with a label name and box (dicts with label, x1..y2)."""
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
    boxes = torch.tensor([p.box for p in mapped], dtype=torch.float32)
    scores = torch.tensor([p.score for p in mapped], dtype=torch.float32)
    names = sorted({p.label for p in mapped})
    groups = torch.tensor([names.index(p.label) for p in mapped])
    kept = [mapped[i] for i in batched_nms(boxes, scores, groups, nms_iou).tolist()]
    ann = [(a["label"], (a["x1"], a["y1"], a["x2"], a["y2"])) for a in annotations]
    if ann and kept:
        ious = box_iou(torch.tensor([p.box for p in kept], dtype=torch.float32),
                       torch.tensor([b for _, b in ann], dtype=torch.float32))
        kept = [p for i, p in enumerate(kept)
                if not any(ious[i, j] >= covered_iou and ann[j][0] == p.label for j in range(len(ann)))]
    return kept


def _fields(d: Any) -> tuple[str, Box, float]:
    if isinstance(d, dict):
        return d["node"], (d["x1"], d["y1"], d["x2"], d["y2"]), float(d["score"])
    return d.node, tuple(float(v) for v in d.box), float(d.score)

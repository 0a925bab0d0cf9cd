"""Lint rules that need no model: zero-area, out-of-image, tiny boxes, labels not in the taxonomy, duplicates.

Each rule looks at one image's annotations and returns findings; they are certain (score 1) except where a
legitimate box can trip them: a tiny box may be a far traffic light (0.75), and two same-label boxes may
overlap heavily when one object hides another, so a duplicate's score is the pair's IoU, halved when the
model sees two separate objects there. Qt-free, numpy and torchvision only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

from inference.lint_types import Annotated, Finding, LintConfig, Proposal


@dataclass(frozen=True)
class RuleResult:
    findings: list[Finding]
    usable: list[Annotated]  # annotations the model checks can judge (known label, positive area)


def _fmt(box: Sequence[float]) -> str:
    return f"{box[2] - box[0]:.0f}×{box[3] - box[1]:.0f} px"


def check_rules(annotations: Sequence[Annotated], labels: Sequence[str], width: int, height: int,
                config: LintConfig, min_box_px: float | None = None) -> RuleResult:
    """Per-box rules. `labels` are the project's label names; `min_box_px` overrides `config.tiny_px`
    (a project's labeling rule `min_box_px`)."""
    tiny = config.tiny_px if min_box_px is None else float(min_box_px)
    known = set(labels)
    tol = config.edge_tolerance_px
    findings: list[Finding] = []
    usable: list[Annotated] = []
    for a in annotations:
        x1, y1, x2, y2 = a.box
        w, h = x2 - x1, y2 - y1
        if a.label not in known:
            findings.append(Finding("unknown_label", 1.0, a.box, f"label {a.label!r} is not in this project's "
                                    f"taxonomy ({', '.join(labels) or 'no labels'})", a.id))
            continue
        if w <= 0 or h <= 0:
            findings.append(Finding("zero_area", 1.0, a.box, f"{a.label} box has zero area ({_fmt(a.box)})", a.id))
            continue
        usable.append(a)
        if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
            clipped = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
            findings.append(Finding("out_of_image", 1.0, clipped, f"{a.label} box reaches outside the "
                                    f"{width}×{height} image", a.id))
        elif min(w, h) < tiny:
            findings.append(Finding("tiny", config.tiny_score, a.box, f"{a.label} box is tiny ({_fmt(a.box)}, "
                                    f"under {tiny:g} px): a stray click?", a.id))
    return RuleResult(findings, usable)


def find_duplicates(annotations: Sequence[Annotated], proposals: Sequence[Proposal],
                    config: LintConfig) -> list[Finding]:
    """Pairs of boxes on one object: same label with IoU >= `duplicate_iou`, or different labels with
    IoU >= `conflict_iou` (one object, two classes). The later box of a pair (higher id) is the finding."""
    if len(annotations) < 2:
        return []
    boxes = torch.tensor([a.box for a in annotations], dtype=torch.float64)
    ious = box_iou(boxes, boxes).numpy()
    confident = [p for p in proposals if p.score >= config.missed_min_score]
    pious = (box_iou(boxes, torch.tensor([p.box for p in confident], dtype=torch.float64)).numpy()
             if confident else np.zeros((len(annotations), 0)))
    out: list[Finding] = []
    flagged: set[int] = set()
    order = sorted(range(len(annotations)), key=lambda i: (annotations[i].id is None, annotations[i].id or 0, i))
    for rank_j, j in enumerate(order):
        for i in order[:rank_j]:
            if i in flagged:
                continue
            a, b, iou = annotations[i], annotations[j], float(ious[i, j])
            same = a.label == b.label
            if iou < (config.duplicate_iou if same else config.conflict_iou):
                continue
            score = iou * (0.5 if same and _two_objects(pious, i, j, confident) else 1.0)
            what = f"a second {b.label} box" if same else f"a {b.label} box on the same object as a {a.label} box"
            out.append(Finding("duplicate", score, b.box, f"possible duplicate: {what} (IoU {iou:.2f})", b.id))
            flagged.add(j)
            break
    return out


def _two_objects(pious: np.ndarray, i: int, j: int, confident: Sequence[Proposal]) -> bool:
    """The model sees two objects: each box's best same-label prediction (IoU >= 0.5) is a different one."""
    if pious.shape[1] < 2:
        return False
    bi, bj = int(pious[i].argmax()), int(pious[j].argmax())
    return bi != bj and pious[i, bi] >= 0.5 and pious[j, bj] >= 0.5 and confident[bi].label == confident[bj].label

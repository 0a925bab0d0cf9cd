"""The linter's vocabulary: finding kinds, a finding, an annotated box, and the thresholds.

Kept apart from `inference/lint.py` so the rules, the cleanlab adapter and the orchestration share it
without importing each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from inference.prelabels import Proposal
from projects.values import AnnotationRow, Box

MODEL_KINDS = ("missed", "wrong_class", "bad_box")  # need the model's predictions
RULE_KINDS = ("duplicate", "zero_area", "out_of_image", "tiny", "unknown_label")
KINDS = (*MODEL_KINDS, *RULE_KINDS)

__all__ = ["KINDS", "MODEL_KINDS", "RULE_KINDS", "Annotated", "Box", "Finding", "LintConfig", "Proposal"]


@dataclass(frozen=True)
class Finding:
    """One likely mistake. `score` in [0, 1] is how likely it is a real mistake; `box` is where to look:
    the model's box for a missed object or a badly located box (a fix puts the annotation there), the
    annotation's box otherwise (clipped for out-of-image). `annotation_id` names the annotation concerned
    (None for a missed object); `suggested_label` is the model's label (missed, wrong class)."""

    kind: str
    score: float
    box: Box
    message: str
    annotation_id: int | None = None
    suggested_label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["box"] = [round(float(v), 2) for v in self.box]
        d["score"] = round(float(self.score), 4)
        return d


# An annotation as the linter sees it (id None for boxes not stored yet, label name, box): the shared value type.
Annotated = AnnotationRow


@dataclass(frozen=True)
class LintConfig:
    """Thresholds. `threshold` is the one a user tunes: findings scoring below it are not reported (they
    still count towards the image's error score, which ranks images). The rest shape each kind's score;
    the defaults were chosen on synthetic scenes (bench/bench_lint.py) and then kept for BCCD."""

    threshold: float = 0.5
    candidate_floor: float = 0.05  # weaker candidates are noise: dropped, also from the image's score
    min_prediction_score: float = 0.1  # predictions below this are ignored altogether
    nms_iou: float = 0.5  # per-label NMS after mapping nodes to the project's labels
    missed_min_score: float = 0.5  # a prediction this confident with no annotation on it: a missed object?
    swap_min_score: float = 0.5  # a prediction of another label this confident on a box: wrong class?
    badloc_min_score: float = 0.3  # same-label predictions this confident judge a box's location
    touch_iou: float = 0.3  # an annotation overlapping a prediction less than this does not cover it
    good_quality: float = 0.85  # cleanlab location quality at or above this: the box is fine
    bad_quality: float = 0.5  # ... at or below this: surely badly located
    duplicate_iou: float = 0.7  # same-label boxes overlapping this much: a duplicate?
    conflict_iou: float = 0.95  # different-label boxes overlapping this much: one object, two classes
    tiny_px: float = 4.0  # a box side under this many pixels is tiny (a project rule `min_box_px` overrides)
    tiny_score: float = 0.75
    edge_tolerance_px: float = 1.0  # a box may reach this far outside the image (rounding)

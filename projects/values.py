"""The value types every layer shares: a box, a detection, an annotation row. Qt-free, torch-free.

One concept, one type: the store writes these numbers, the predictor and the worker return
`Detection`s, the linter reads `AnnotationRow`s, and the widgets draw both. Before this module there
were eight `Box` aliases and two detection classes (`Detection`, `PredictedBox`) that meant the same.
This module imports only the standard library, so any layer may use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels; pixel edges at integers

DEFAULT_COLOR = "#e6194b"  # a label without a colour of its own


def snap_box(box: Box) -> Box:
    """The one coordinate rule of stored edits: whole pixels.

    Each edge goes to the nearest integer (halves up: 190.5 -> 191), so x1 = 190 means the box starts at the
    left edge of pixel column 190, and x2 = 240 that it ends at the right edge of column 239. A box keeps at
    least one pixel each way: when both edges round to the same number (a box thinner than a pixel) the near
    edge moves one pixel back, or the far edge one pixel out at the image's left or top border, so a box
    clamped to the image stays inside it. Every box the labeling window writes (drawn, accepted, adjusted,
    refined, moved, resized, nudged, a lint fix) goes through this in its undo command (`labeler.app.undo`);
    imported boxes keep their file's numbers until they are edited. A NaN or infinite number is returned as
    it is, for the store to refuse with a message.
    """
    if not all(math.isfinite(float(v)) for v in box):
        return tuple(float(v) for v in box)
    x1, y1, x2, y2 = (math.floor(float(v) + 0.5) for v in box)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    if x2 == x1:
        x1, x2 = (x1 - 1, x2) if x1 > 0 else (x1, x2 + 1)
    if y2 == y1:
        y1, y2 = (y1 - 1, y2) if y1 > 0 else (y1, y2 + 1)
    return (float(x1), float(y1), float(x2), float(y2))


def box_of(row: Mapping[str, Any]) -> Box:
    """The box of a stored row (annotation, prediction, finding): its x1, y1, x2, y2 columns."""
    return (float(row["x1"]), float(row["y1"]), float(row["x2"]), float(row["y2"]))


@dataclass(frozen=True)
class Detection:
    """One box the model found, in a super-taxonomy node, before any customer's labels are applied."""

    node: str
    box: Box
    score: float


@dataclass(frozen=True)
class AnnotationRow:
    """One live annotation as the app, the linter and the widgets see it (never a database row).

    `id` is None for a box not stored yet (the linter's benchmarks); `label` is the project's label
    name; `color` the label's colour as the canvas and lists paint it."""

    id: int | None
    label: str
    box: Box
    provenance: str = "manual"
    color: str = DEFAULT_COLOR
    label_id: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any], color: str | None = None) -> AnnotationRow:
        """From a workspace row (`Workspace.annotations`: id, label, label_id, x1..y2, provenance)."""
        return cls(row.get("id"), str(row["label"]), box_of(row), str(row.get("provenance") or "manual"),
                   color or DEFAULT_COLOR, row.get("label_id"))

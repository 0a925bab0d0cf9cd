"""Hierarchical decoding: a node's score never exceeds its ancestors', and an untrained node emits nothing.

Why: under Taxonomy Loss Masking a node that no training image labels (car/truck/bus when every customer
only says "Vehicle") is masked everywhere, never learns, and would still fire at its initial prior on every
anchor; mapped up to the customer's coarse label, thousands of such detections crowd the real ones out of
the top-k and wreck the ranking. Two rules, applied to the class logits before top-k and NMS:

1. **Trained nodes only.** A node with no positive box in the model's training data (the checkpoint's data
   snapshot: `node_positives`, or for older checkpoints the union of the projects' labeled nodes) gets a
   logit of -inf-like value and is dropped from the detections.
2. **Monotone down the tree.** Each column becomes the minimum of itself and every ancestor's column (the
   nearest ancestor present in the same head when a head predicts only some nodes). A box of node *n* is a
   positive for *n* and its ancestors, so each column estimates P(node ∧ object); P(child) ≤ P(parent) holds
   for the true probabilities, and the minimum is the closest value that keeps it without retraining.
   Sigmoid is monotone, so the rule on logits is the same rule on scores.

Qt-free; used by the predictor, so evaluation, pre-labels, refine and lint all see decoded scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

OFF = -1.0e4  # sigmoid(OFF) == 0.0 in float32


class GroupDecoding:
    """The decoding of one class head (a group of nodes in the head's column order)."""

    def __init__(self, nodes: Sequence[str], parent_of: Mapping[str, str | None], trained: Iterable[str] | None):
        self.nodes = tuple(nodes)
        index = {n: i for i, n in enumerate(self.nodes)}
        parents: list[int] = []
        for i, n in enumerate(self.nodes):
            p = parent_of.get(n)
            while p is not None and p not in index:  # nearest ancestor this head predicts
                p = parent_of.get(p)
            parents.append(index[p] if p is not None else i)
        depth = 0
        for i in range(len(parents)):  # hops to the top within this head
            steps, j = 0, i
            while parents[j] != j:
                j, steps = parents[j], steps + 1
            depth = max(depth, steps)
        self.depth = depth
        self.parent_index = torch.tensor(parents, dtype=torch.long)
        trained_set = set(self.nodes) if trained is None else set(trained)
        self.enabled = torch.tensor([n in trained_set for n in self.nodes], dtype=torch.bool)
        self.is_identity = depth == 0 and bool(self.enabled.all())

    def logits(self, cls_out: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decode effdet's per-level class logits [B, A*C, H, W] (class fastest in the channel axis)."""
        if self.is_identity:
            return cls_out
        c = len(self.nodes)
        out = []
        for level in cls_out:
            b, ac, h, w = level.shape
            x = level.reshape(b, ac // c, c, h, w)
            parent = self.parent_index.to(x.device)
            for _ in range(self.depth):  # after `depth` rounds each column is the min over its ancestor chain
                x = torch.minimum(x, x.index_select(2, parent))
            x = torch.where(self.enabled.to(x.device).view(1, 1, c, 1, 1), x, torch.full_like(x, OFF))
            out.append(x.reshape(b, ac, h, w))
        return out


def trained_nodes(meta: Mapping[str, Any]) -> set[str] | None:
    """Nodes with at least one positive in the checkpoint's training data; None when it does not say
    (a checkpoint without a data snapshot: every node is kept)."""
    data = meta.get("data") or {}
    positives = data.get("node_positives")
    if isinstance(positives, Mapping):
        return {str(n) for n, k in positives.items() if int(k) > 0}
    projects = data.get("projects")
    if isinstance(projects, Mapping) and projects:
        return {str(n) for p in projects.values() for n in (p.get("labeled_nodes") or [])}
    return None


def parent_map(meta: Mapping[str, Any]) -> dict[str, str | None]:
    return {str(n["name"]): (str(n["parent"]) if n.get("parent") else None)
            for n in meta["super_taxonomy"]["nodes"]}

"""From boxes in super-taxonomy nodes to what one class head learns: targets, unknowns and masks.

A class head predicts a *group* of nodes (all nodes for one model; a project's nodes for a head of the
`heads` approach; a single node for `per-class`). For a box of node b and a group G:

- targets  = G ∩ {b and its ancestors}    (a pedestrian_adult box is also a person);
- unknown  = G ∩ {descendants of b}       (a vehicle box may be any kind of vehicle) — `tlm` only;
- the image mask over G is 1 where the image's project labels the node — `tlm` only; `naive` treats
  every unlabeled class as background (mask of ones, nothing unknown).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from projects.taxonomy import SuperTaxonomy

MODES = ("tlm", "naive")


def encode_boxes(sup: SuperTaxonomy, group: Sequence[str], box_nodes: Iterable[str], mode: str = "tlm"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets [M, K], unknown [M, K]) float tensors for the boxes' nodes against the group's nodes."""
    if mode not in MODES:
        raise ValueError(f"unknown encoding mode {mode!r} (one of {', '.join(MODES)})")
    index = {n: i for i, n in enumerate(group)}
    nodes = list(box_nodes)
    tgt = torch.zeros(len(nodes), len(group))
    unk = torch.zeros(len(nodes), len(group))
    for r, node in enumerate(nodes):
        for n in sup.positives(node):
            if n in index:
                tgt[r, index[n]] = 1.0
        if mode == "tlm":
            for n in sup.unknown_for_box(node):
                if n in index:
                    unk[r, index[n]] = 1.0
    return tgt, unk


def relevant_rows(targets: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
    """Boxes that say something about the group; the rest are background to it and are dropped."""
    return (targets.sum(1) + unknown.sum(1)) > 0


def group_mask(group: Sequence[str], labeled_nodes: Iterable[str], mode: str = "tlm") -> torch.Tensor:
    """The image's missing-label mask over the group's nodes ([K] float)."""
    if mode not in MODES:
        raise ValueError(f"unknown encoding mode {mode!r} (one of {', '.join(MODES)})")
    if mode == "naive":
        return torch.ones(len(group))
    labeled = set(labeled_nodes)
    return torch.tensor([1.0 if n in labeled else 0.0 for n in group])

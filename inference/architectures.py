"""How a trained detector is laid out: one model, one model with a head pair per project, or one
model per node. Each layout is a registered class, built from a checkpoint's JSON by name.

Every layout answers `forward(x) -> list[(cls_outputs, box_outputs)]`, one entry per *group*; a group
is a list of super-taxonomy nodes that one class head predicts. The predictor decodes every group the
same way (effdet's own post-processing) and merges them, so it never needs to know which approach
trained the model. The approaches compared in the issue map onto layouts:

- `single` (Taxonomy Loss Masking, naive, oracle): one EfficientDet, one group of all nodes;
- `heads`: the shared backbone + BiFPN with a classification/regression head pair per project;
- `per-class`: an independent single-class EfficientDet per node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from effdet import EfficientDet
from torch import nn

from inference.models import build_head, build_model

Outputs = tuple[list[torch.Tensor], list[torch.Tensor]]


@dataclass(frozen=True)
class Group:
    """One class head: its name (a project, a node, or "all") and the nodes it predicts, in order."""

    name: str
    nodes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "nodes": list(self.nodes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Group:
        return cls(str(d["name"]), tuple(str(n) for n in d["nodes"]))


class Detector(nn.Module):
    """Base of every layout: `groups`, the effdet `config` (anchors and image size) and `forward`."""

    layout = ""
    groups: list[Group]

    @property
    def config(self):
        raise NotImplementedError

    def forward(self, x: torch.Tensor, group_index: int | None = None) -> list[Outputs]:
        raise NotImplementedError


LAYOUTS: dict[str, type[Detector]] = {}


def register_layout(cls: type[Detector]) -> type[Detector]:
    LAYOUTS[cls.layout] = cls
    return cls


@register_layout
class SingleDetector(Detector):
    layout = "single"

    def __init__(self, model_name: str, groups: list[Group], image_size: int, pretrained: str = "none"):
        super().__init__()
        if len(groups) != 1:
            raise ValueError("a single detector has exactly one group")
        self.groups = list(groups)
        self.net: EfficientDet = build_model(model_name, len(groups[0].nodes), image_size, pretrained)

    @property
    def config(self):
        return self.net.config

    def forward(self, x: torch.Tensor, group_index: int | None = None) -> list[Outputs]:
        return [self.net(x)]


@register_layout
class HeadsDetector(Detector):
    """Shared backbone and BiFPN; a classification and a regression head per group (project)."""

    layout = "heads"

    def __init__(self, model_name: str, groups: list[Group], image_size: int, pretrained: str = "none"):
        super().__init__()
        self.groups = list(groups)
        self.net: EfficientDet = build_model(model_name, 1, image_size, pretrained)
        self.net.class_net = nn.Identity()  # replaced by per-group heads below
        self.net.box_net = nn.Identity()
        self.class_nets = nn.ModuleList(build_head(self.net, len(g.nodes)) for g in groups)
        self.box_nets = nn.ModuleList(build_head(self.net, 4) for _ in groups)

    @property
    def config(self):
        return self.net.config

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net.fpn(self.net.backbone(x))

    def forward(self, x: torch.Tensor, group_index: int | None = None) -> list[Outputs]:
        feats = self.features(x)
        which = range(len(self.groups)) if group_index is None else [group_index]
        return [(self.class_nets[g](feats), self.box_nets[g](feats)) for g in which]

    def head_outputs(self, feats: list[torch.Tensor], group_index: int) -> Outputs:
        return self.class_nets[group_index](feats), self.box_nets[group_index](feats)


@register_layout
class PerClassDetector(Detector):
    """One independent EfficientDet per group (one node each)."""

    layout = "per-class"

    def __init__(self, model_name: str, groups: list[Group], image_size: int, pretrained: str = "none"):
        super().__init__()
        self.groups = list(groups)
        self.nets = nn.ModuleList(build_model(model_name, len(g.nodes), image_size, pretrained) for g in groups)

    @property
    def config(self):
        return self.nets[0].config

    def forward(self, x: torch.Tensor, group_index: int | None = None) -> list[Outputs]:
        which = range(len(self.groups)) if group_index is None else [group_index]
        return [self.nets[g](x) for g in which]


def build_detector(layout: str, model_name: str, groups: list[Group], image_size: int,
                   pretrained: str = "none") -> Detector:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    return LAYOUTS[layout](model_name, groups, image_size, pretrained)

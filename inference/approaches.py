"""The training approaches compared in the issue, each a registered class (no if-chain):

- `tlm`: one model over every node; each image's loss is masked to the nodes its project labels,
  and the unknown descendants of each box are masked too (Taxonomy Loss Masking);
- `naive`: the same model, every class a project does not label treated as background;
- `heads`: a shared backbone + BiFPN with a classification/regression head pair per project, each head
  trained only on its project's images, in that project's nodes;
- `per-class`: an independent single-class model per node, trained on the projects that label it.

An approach says which layout and head groups the model has, which images train which group in which
*phase* (per-class trains its models one after another), and how a batch turns into a loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from effdet.anchors import Anchors

from inference.architectures import Detector, Group
from inference.dataset import Sample, TrainingData
from inference.encoding import encode_boxes, group_mask, relevant_rows
from inference.loss import TaxonomyAnchorLabeler, loss_from_config


@dataclass
class Phase:
    """A stretch of training: which groups learn (None: all at once), from which samples, with which
    share of the time or epoch budget."""

    groups: list[int] | None
    samples: list[Sample]
    share: float
    name: str = "all"


class Approach:
    name = ""
    layout = "single"
    mode = "tlm"
    help = ""

    def groups(self, data: TrainingData) -> list[Group]:
        return [Group("all", tuple(data.sup.names))]

    def phases(self, data: TrainingData, groups: list[Group], samples: list[Sample]) -> list[Phase]:
        return [Phase(None, list(samples), 1.0)]

    def sample_groups(self, groups: list[Group], batch: list[dict], phase: Phase) -> dict[int, list[int]]:
        """group index -> indices of the batch's samples that train it."""
        return {0: list(range(len(batch)))}

    def learning_groups(self, groups: list[Group], phase: Phase) -> list[int]:
        """Every group that learns in this phase, whether or not a given batch holds images for it."""
        return list(range(len(groups))) if phase.groups is None else list(phase.groups)

    def parameters(self, model: Detector, phase: Phase):
        return model.parameters()

    def forward_groups(self, model: Detector, x: torch.Tensor, which: dict[int, list[int]]):
        """(group index, sample indices, (cls_outputs, box_outputs)) for every group that learns."""
        outs = model(x)
        return [(g, idx, outs[g]) for g, idx in which.items()]


APPROACHES: dict[str, Approach] = {}


def register_approach(cls: type[Approach]) -> type[Approach]:
    APPROACHES[cls.name] = cls()
    return cls


@register_approach
class TaxonomyLossMasking(Approach):
    name = "tlm"
    help = "one model, loss masked to the nodes each image's project labels (Taxonomy Loss Masking)"


@register_approach
class Naive(Approach):
    name = "naive"
    mode = "naive"
    help = "one model, classes a project does not label are treated as background"


@register_approach
class Heads(Approach):
    name = "heads"
    layout = "heads"
    help = "shared backbone with a classification/regression head pair per project"

    def groups(self, data: TrainingData) -> list[Group]:
        out = []
        for p in data.labeled:
            nodes = {s for s in data.labeled[p]}
            # a head predicts what its customer draws: the label nodes (a parent labeled only through all
            # of its children is predicted through them)
            label_nodes = {n for n in nodes if not data.sup.children[n] or not set(data.sup.children[n]) <= nodes}
            ordered = tuple(n for n in data.sup.names if n in label_nodes)
            if ordered:
                out.append(Group(p, ordered))
        return out

    def sample_groups(self, groups, batch, phase):
        index = {g.name: i for i, g in enumerate(groups)}
        which: dict[int, list[int]] = {}
        for i, t in enumerate(batch):
            if t["project"] in index:
                which.setdefault(index[t["project"]], []).append(i)
        return which

    def forward_groups(self, model, x, which):
        # every head sees the whole batch (batch-norm statistics need more than one image), and learns
        # only from its own project's images
        feats = model.features(x)
        out = []
        for g, idx in which.items():
            cls_out, box_out = model.head_outputs(feats, g)
            out.append((g, idx, ([c[idx] for c in cls_out], [b[idx] for b in box_out])))
        return out


@register_approach
class PerClass(Approach):
    name = "per-class"
    layout = "per-class"
    help = "one single-class model per node, each trained on the projects that label it"

    def groups(self, data: TrainingData) -> list[Group]:
        labeled_somewhere = set().union(*data.labeled.values()) if data.labeled else set()
        return [Group(n, (n,)) for n in data.sup.names if n in labeled_somewhere]

    def phases(self, data, groups, samples):
        phases = []
        for i, g in enumerate(groups):
            mine = [s for s in samples if g.nodes[0] in data.labeled[s.project]]
            if mine:
                phases.append(Phase([i], mine, 1.0, name=g.name))
        for ph in phases:
            ph.share = 1.0 / len(phases)
        return phases

    def sample_groups(self, groups, batch, phase):
        return {phase.groups[0]: list(range(len(batch)))}

    def parameters(self, model, phase):
        return model.nets[phase.groups[0]].parameters()

    def forward_groups(self, model, x, which):
        (g, idx), = which.items()
        return [(g, idx, model(x, group_index=g)[0])]


def approach(name: str) -> Approach:
    if name not in APPROACHES:
        raise ValueError(f"unknown approach {name!r} (known: {', '.join(APPROACHES)})")
    return APPROACHES[name]


class LossComputer:
    """Turns (model outputs, batch targets) into the approach's loss, one anchor labeler per group.

    With `sync` set (a `DistContext`, by inference/distributed.py) the batch is one rank's share of the global
    batch: every rank runs the same groups (their collectives pair up), each group's loss is divided by its
    positive anchors over every rank's batch, its share is its images in the global batch, and the loss is
    scaled by the world size, so DistributedDataParallel's gradient average is the one-process gradient."""

    def __init__(self, app: Approach, model: Detector, data: TrainingData, groups: Sequence[Group],
                 ignore_band: tuple[float, float] | None = None):
        self.app, self.model, self.data, self.groups = app, model, data, list(groups)
        anchors = Anchors.from_config(model.config)
        self.anchors = anchors
        self.labelers = [TaxonomyAnchorLabeler(anchors, len(g.nodes), ignore_band=ignore_band) for g in self.groups]
        self._masks = {}
        self.sync = None  # a DistContext when training on several ranks

    def to(self, device: torch.device) -> LossComputer:
        self.anchors.to(device)
        return self

    def mask(self, g: int, project: str) -> torch.Tensor:
        key = (g, project)
        if key not in self._masks:
            self._masks[key] = group_mask(self.groups[g].nodes, self.data.labeled[project], self.app.mode)
        return self._masks[key]

    def targets(self, g: int, idx: list[int], batch: list[dict]):
        group = self.groups[g]
        boxes, tgts, unks, weights, masks = [], [], [], [], []
        for i in idx:
            t = batch[i]
            tgt, unk = encode_boxes(self.data.sup, group.nodes, t["nodes"], self.app.mode)
            keep = relevant_rows(tgt, unk)
            boxes.append(t["boxes_yxyx"][keep])
            tgts.append(tgt[keep])
            unks.append(unk[keep])
            weights.append(t["weights"][keep])
            masks.append(self.mask(g, t["project"]))
        return self.labelers[g].label(boxes, tgts, torch.stack(masks), unknown=unks, box_weights=weights)

    def __call__(self, x: torch.Tensor, batch: list[dict], phase: Phase) -> tuple[torch.Tensor, dict[str, float]]:
        which = self.app.sample_groups(self.groups, batch, phase)
        if self.sync is not None:
            which = {g: which.get(g, []) for g in self.app.learning_groups(self.groups, phase)}
        outputs = self.app.forward_groups(self.model, x, which)
        labeled = [(g, idx, outs, self.targets(g, idx, batch) if idx else None) for g, idx, outs in outputs]
        if self.sync is None:
            norms = [None] * len(labeled)
            shares = [len(idx) / len(batch) for _, idx, _, _ in labeled]
        else:
            from inference.distributed import reduce_counts

            local = [float(len(idx)) for _, idx, _, _ in labeled]
            local += [float(t.num_positives.sum()) if t is not None else 0.0 for _, _, _, t in labeled]
            total = reduce_counts(self.sync, local + [float(len(batch))], x.device)
            k = len(labeled)
            norms = [total[k + j] + 1.0 for j in range(k)]
            shares = [self.sync.world_size * float(total[j]) / float(total[-1]) for j in range(k)]
        total_loss = x.new_zeros(())
        parts = {"cls": 0.0, "box": 0.0}
        for (g, _, (cls_out, box_out), targets), norm, share in zip(labeled, norms, shares):
            if targets is None:  # no image of this group on this rank: its head still ran, and learns nothing here
                total_loss = total_loss + 0.0 * sum(o.sum() for o in [*cls_out, *box_out])
                continue
            loss, cls_l, box_l = loss_from_config(cls_out, box_out, targets, self.model.config,
                                                  len(self.groups[g].nodes), normalizer=norm)
            total_loss = total_loss + loss * share
            parts["cls"] += cls_l.item() * share
            parts["box"] += box_l.item() * share
        return total_loss, parts

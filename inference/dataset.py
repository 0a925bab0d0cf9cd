"""The training data a workspace holds: submitted images of the chosen projects, their boxes in
super-taxonomy nodes, each image's project (hence its missing-label mask), per-box regression weights
from the labeling rules, and the stable split from the image's bucket.

Reading goes through `Workspace` methods only (no SQL here). Only *submitted* images are used: an image
in progress may still miss boxes its customer would draw, which would teach the model that those
objects are background.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from inference.augment import augment, default_augmentation
from inference.letterbox import boxes_to_letterbox, letterbox
from projects.errors import LabelerError
from projects.imaging import read_image
from projects.split import SPLIT_VERSION, split_of
from projects.taxonomy import SuperTaxonomy
from projects.workspace import Workspace

# A labeling rule that changes box geometry: the subtree it applies to and its default value.
# The target convention (what the model should learn) gets full regression weight; boxes drawn under
# the other convention get OFF_RULE_WEIGHT (the article's "weight the regression loss").
RULE_SUBTREES: dict[str, tuple[str, Any]] = {"vehicle_mirrors": ("vehicle", True)}
DEFAULT_TARGET_RULES: dict[str, Any] = {"vehicle_mirrors": True}
OFF_RULE_WEIGHT = 0.3


class DatasetError(LabelerError, ValueError):
    """The workspace holds no usable training data for the request; the message says why."""


@dataclass(frozen=True)
class Sample:
    image_id: int
    path: Path
    width: int
    height: int
    project: str
    split: str
    sha256: str
    boxes: np.ndarray  # [M, 4] x1, y1, x2, y2 pixels
    nodes: tuple[str, ...]
    box_weights: np.ndarray  # [M]


@dataclass
class TrainingData:
    sup: SuperTaxonomy
    samples: list[Sample]
    labeled: dict[str, frozenset[str]]  # project -> labeled nodes
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def snapshot(self) -> dict[str, Any]:
        """What a checkpoint records about its data: enough to tell whether two models saw the same."""
        per_project: dict[str, dict[str, Any]] = {}
        for p in self.labeled:
            mine = [s for s in self.samples if s.project == p]
            per_project[p] = {
                "images": {sp: sum(1 for s in mine if s.split == sp) for sp in ("train", "val", "test")},
                "boxes_train": int(sum(len(s.nodes) for s in mine if s.split == "train")),
                "labeled_nodes": [n for n in self.sup.names if n in self.labeled[p]],
                "rules": self.rules.get(p, {})}
        h = hashlib.sha256()
        for s in sorted(self.samples, key=lambda s: s.image_id):
            h.update(f"{s.image_id}:{s.sha256}:{len(s.nodes)};".encode())
        # positives per node in the training split (a box is a positive for its node and its ancestors): the
        # predictor's hierarchical decoding silences nodes with none (inference/decoding.py)
        positives = dict.fromkeys(self.sup.names, 0)
        for s in self.split("train"):
            for node in s.nodes:
                for n in self.sup.positives(node):
                    positives[n] += 1
        return {"projects": per_project, "split_version": SPLIT_VERSION, "fingerprint": h.hexdigest()[:16],
                "node_positives": positives}


def box_weight(node: str, project_rules: dict[str, Any], sup: SuperTaxonomy,
               target_rules: dict[str, Any] | None = None) -> float:
    """1 for a box drawn by the target convention (or one no geometry rule concerns), else OFF_RULE_WEIGHT."""
    target = DEFAULT_TARGET_RULES if target_rules is None else target_rules
    for rule, (root, default) in RULE_SUBTREES.items():
        if rule not in target or root not in sup:
            continue
        if node == root or root in sup.ancestors(node):
            if project_rules.get(rule, default) != target[rule]:
                return OFF_RULE_WEIGHT
    return 1.0


def load_training_data(ws: Workspace, projects: Sequence[str] | None = None,
                       target_rules: dict[str, Any] | None = None) -> TrainingData:
    """Every submitted image of the projects (all by default), with boxes, split and weights."""
    sup = ws.super_taxonomy()
    names = list(projects) if projects else ws.project_names()
    known = ws.project_names()
    unknown = [p for p in names if p not in known]
    if unknown:
        raise DatasetError(f"no project named {unknown[0]!r} in {ws.folder} (projects: {', '.join(known) or 'none'})")
    samples: list[Sample] = []
    labeled: dict[str, frozenset[str]] = {}
    rules: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    for p in names:
        view = ws.project_view(p)
        labeled[p] = view.labeled_nodes
        rules[p] = dict(view.taxonomy.rules)
        for image_id in ws.image_ids(p, status="submitted"):
            sample = make_sample(ws, image_id, p, rules[p], sup, target_rules)
            if not sample.path.is_file():
                missing.append(str(sample.path))
                continue
            samples.append(sample)
    if missing:
        raise DatasetError(f"{len(missing)} submitted image file(s) are missing, e.g. {missing[0]}; "
                           "restore them or move them back into the workspace folder")
    return TrainingData(sup, samples, labeled, rules)


def make_sample(ws: Workspace, image_id: int, project: str, project_rules: dict[str, Any], sup: SuperTaxonomy,
                target_rules: dict[str, Any] | None = None) -> Sample:
    """One image as a training sample: its live boxes in nodes, rule weights and stable split (the file is
    not opened here; the caller decides what a missing file means)."""
    row = ws.image(image_id)
    anns = ws.annotations(image_id)
    boxes = np.array([[a["x1"], a["y1"], a["x2"], a["y2"]] for a in anns], np.float32).reshape(-1, 4)
    nodes = tuple(a["node"] for a in anns)
    weights = np.array([box_weight(n, project_rules, sup, target_rules) for n in nodes], np.float32)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # zero-area boxes teach nothing
    return Sample(image_id, ws.image_path(row["path"]), int(row["width"]), int(row["height"]), project,
                  split_of(int(row["split_bucket"])), row["sha256"], boxes[keep],
                  tuple(n for n, k in zip(nodes, keep) if k), weights[keep])


class DetectionDataset(Dataset):
    """Samples as letterboxed, normalised tensors with their boxes in input pixels (yxyx, effdet's order)."""

    def __init__(self, samples: Sequence[Sample], image_size: int, mean: Sequence[float], std: Sequence[float],
                 train: bool = True):
        self.samples = list(samples)
        self.image_size = image_size
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.transform = default_augmentation() if train else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.item(self.samples[i])

    def item(self, s: Sample) -> tuple[torch.Tensor, dict[str, Any]]:
        """One sample as (tensor, target); also used by the follow trainer's stream (inference/stream.py)."""
        image = read_image(s.path)
        boxes, keep = s.boxes, np.arange(len(s.nodes))
        if self.transform is not None:
            image, boxes, keep = augment(image, boxes, self.transform)
        boxed, scale = letterbox(image, self.image_size, self.mean)
        xyxy = boxes_to_letterbox(boxes, scale)
        x = torch.from_numpy(boxed).permute(2, 0, 1).float()
        x = (x - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)
        return x, {"boxes_yxyx": torch.from_numpy(xyxy[:, [1, 0, 3, 2]].copy()),
                   "nodes": tuple(s.nodes[k] for k in keep),
                   "weights": torch.from_numpy(s.box_weights[keep].copy()),
                   "project": s.project, "image_id": s.image_id, "scale": scale}


def collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]

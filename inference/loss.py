"""Taxonomy Loss Masking: effdet's focal and box losses with a per-(anchor, class) weight.

effdet assigns every anchor to a ground-truth box (IoU >= 0.5), to background, or leaves it
unassigned, and multiplies the per-anchor, per-class focal loss by `cls_targets != -2` so unassigned
anchors teach nothing. Taxonomy Loss Masking puts one more factor at exactly that place:

- the image's **missing-label mask** (column-wise): a class the image's project does not label is never
  pushed towards background on that image;
- the **unknown descendants** of the anchor's box (row and column): a "Human" box says nothing about
  whether it is a child, so its anchors are not pushed down on `pedestrian_child`;
- the optional RetinaNet **ignore band** [0.4, 0.5) of IoU, where effdet's labeler (whose matcher has
  one threshold) never produces its -2.

Targets are multi-hot per box (a box of node n is a positive for n and its ancestors), built by the
approach (`inference/encoding.py`); with one-hot targets and an all-ones mask this module computes
effdet's `loss_fn` to the last bit (tests/test_inference_loss.py). Anchor matching and the box codes are
effdet's own `TargetAssigner` (argmax matcher, Faster R-CNN box coder); the focal and Huber losses are
effdet's functions. Per-box regression weights (from labeling rules) scale the box loss of the anchors
matched to that box.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from effdet.anchors import Anchors
from effdet.loss import focal_loss_legacy, huber_loss, new_focal_loss
from effdet.object_detection import ArgMaxMatcher, BoxList, FasterRcnnBoxCoder, IouSimilarity, TargetAssigner


@dataclass
class AnchorTargets:
    """Per feature level: cls [B, H, W, A, K] multi-hot, cls_weight [B, H, W, A, K], box [B, H, W, A*4],
    box_weight [B, H, W, A]; num_positives [B]."""

    cls: list[torch.Tensor]
    cls_weight: list[torch.Tensor]
    box: list[torch.Tensor]
    box_weight: list[torch.Tensor]
    num_positives: torch.Tensor


class TaxonomyAnchorLabeler:
    """effdet's anchor labeling, extended to multi-hot targets, per-box unknown classes and weights."""

    def __init__(self, anchors: Anchors, num_classes: int, match_threshold: float = 0.5,
                 ignore_band: tuple[float, float] | None = None):
        unmatched = match_threshold
        if ignore_band is not None:
            low, high = ignore_band
            if not 0 < low <= high <= 1:
                raise ValueError(f"ignore band must satisfy 0 < low <= high <= 1, got {ignore_band}")
            unmatched, match_threshold = low, high
        matcher = ArgMaxMatcher(match_threshold, unmatched_threshold=unmatched, negatives_lower_than_unmatched=True,
                                force_match_for_each_row=True)
        self.target_assigner = TargetAssigner(IouSimilarity(), matcher, FasterRcnnBoxCoder())
        self.anchors = anchors
        self.num_classes = num_classes

    def label(self, boxes_yxyx: list[torch.Tensor], targets: list[torch.Tensor], image_masks: torch.Tensor,
              unknown: list[torch.Tensor] | None = None, box_weights: list[torch.Tensor] | None = None
              ) -> AnchorTargets:
        """boxes_yxyx[b]: [M, 4] in input pixels; targets[b]: [M, K] multi-hot; image_masks: [B, K];
        unknown[b]: [M, K] (1 where the box says nothing about the class); box_weights[b]: [M]."""
        K = self.num_classes
        device = self.anchors.boxes.device
        anchor_list = BoxList(self.anchors.boxes)
        levels = range(self.anchors.min_level, self.anchors.max_level + 1)
        out: dict[str, list[list[torch.Tensor]]] = {k: [[] for _ in levels] for k in ("cls", "w", "box", "bw")}
        num_pos = []
        zeros_k = torch.zeros(1, K, device=device)
        for b in range(len(boxes_yxyx)):
            gt = boxes_yxyx[b].to(device).float().reshape(-1, 4)
            tgt = targets[b].to(device).float().reshape(-1, K)
            unk = (unknown[b].to(device).float().reshape(-1, K) if unknown is not None
                   else torch.zeros_like(tgt))
            bw = (box_weights[b].to(device).float().reshape(-1) if box_weights is not None
                  else torch.ones(len(gt), device=device))
            has_pos = (tgt.sum(1) > 0).float()
            ids = torch.arange(len(gt), device=device)
            _, box_t, match = self.target_assigner.assign(anchor_list, BoxList(gt), ids)
            cls_t = match.gather_based_on_match(tgt, unmatched_value=zeros_k, ignored_value=zeros_k)
            unk_t = match.gather_based_on_match(unk, unmatched_value=zeros_k, ignored_value=zeros_k)
            assigned = (match.match_results != -2).float().unsqueeze(1)
            weight = assigned * image_masks[b].to(device).float().unsqueeze(0) * (1.0 - unk_t)
            bw_t = match.gather_based_on_match(bw * has_pos, unmatched_value=0.0, ignored_value=0.0)
            pos_t = match.gather_based_on_match(has_pos, unmatched_value=0.0, ignored_value=0.0)
            num_pos.append(pos_t.sum())
            count = 0
            for li, level in enumerate(levels):
                fh, fw = self.anchors.feat_sizes[level]
                steps = fh * fw * self.anchors.get_anchors_per_location()
                sl = slice(count, count + steps)
                out["cls"][li].append(cls_t[sl].reshape(fh, fw, -1, K))
                out["w"][li].append(weight[sl].reshape(fh, fw, -1, K))
                out["box"][li].append(box_t[sl].reshape(fh, fw, -1))
                out["bw"][li].append(bw_t[sl].reshape(fh, fw, -1))
                count += steps
        stack = lambda key: [torch.stack(per_level) for per_level in out[key]]
        return AnchorTargets(stack("cls"), stack("w"), stack("box"), stack("bw"), torch.stack(num_pos))


def masked_loss_fn(cls_outputs: list[torch.Tensor], box_outputs: list[torch.Tensor], targets: AnchorTargets,
                   num_classes: int, alpha: float, gamma: float, delta: float, box_loss_weight: float,
                   label_smoothing: float = 0.0, legacy_focal: bool = False,
                   normalizer: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """effdet's `loss_fn`, step for step, with `targets.cls_weight` where it multiplies by its -2 mask and
    `targets.box_weight` on the box loss. Returns (total, class, box) losses. `normalizer` replaces effdet's
    (positive anchors + 1) of this batch: distributed training passes the count over every rank's batch."""
    num_positives_sum = (targets.num_positives.sum() + 1.0).float() if normalizer is None else normalizer.float()
    cls_losses, box_losses = [], []
    for lvl in range(len(cls_outputs)):
        cls_targets_oh = targets.cls[lvl]
        bs, height, width, _, _ = cls_targets_oh.shape
        cls_targets_oh = cls_targets_oh.view(bs, height, width, -1)
        cls_out = cls_outputs[lvl].permute(0, 2, 3, 1).float()
        if legacy_focal:
            cls_loss = focal_loss_legacy(cls_out, cls_targets_oh, alpha=alpha, gamma=gamma,
                                         normalizer=num_positives_sum)
        else:
            cls_loss = new_focal_loss(cls_out, cls_targets_oh, alpha=alpha, gamma=gamma,
                                      normalizer=num_positives_sum, label_smoothing=label_smoothing)
        cls_loss = cls_loss.view(bs, height, width, -1, num_classes)
        cls_loss = cls_loss * targets.cls_weight[lvl]
        cls_losses.append(cls_loss.sum())

        box_targets = targets.box[lvl]
        weights = (box_targets != 0.0) * targets.box_weight[lvl].repeat_interleave(4, dim=-1)
        box_loss = huber_loss(box_outputs[lvl].permute(0, 2, 3, 1).float(), box_targets, weights=weights,
                              delta=delta, size_average=False)
        box_losses.append(box_loss / (num_positives_sum * 4.0))
    cls_loss = torch.sum(torch.stack(cls_losses, dim=-1), dim=-1)
    box_loss = torch.sum(torch.stack(box_losses, dim=-1), dim=-1)
    return cls_loss + box_loss_weight * box_loss, cls_loss, box_loss


def loss_from_config(cls_outputs, box_outputs, targets: AnchorTargets, config, num_classes: int,
                     normalizer: torch.Tensor | None = None):
    """`masked_loss_fn` with the hyper-parameters of an effdet model config."""
    return masked_loss_fn(cls_outputs, box_outputs, targets, num_classes=num_classes, alpha=config.alpha,
                          gamma=config.gamma, delta=config.delta, box_loss_weight=config.box_loss_weight,
                          label_smoothing=config.label_smoothing, legacy_focal=config.legacy_focal,
                          normalizer=normalizer)

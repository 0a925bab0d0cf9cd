"""Cheaper CPU training steps: frozen batch norm and early backbone stages, bf16 autocast, memory format.

Each switch is measured side by side with today's step by `bench/bench_train_speed.py` (img/s and the loss
after the same steps on the same batches; docs/benchmarks/training.md), and the defaults of `TrainConfig`
follow those figures:

- **frozen early stages** (`freeze_stages`): the stem and the first backbone blocks keep their ImageNet
  weights. They run at the highest resolution, so backward through them is the costliest part of a step,
  and what they compute (edges, colour blobs) is what ImageNet taught them already;
- **frozen batch norm in the backbone** (`freeze_bn`): the backbone's batch norms use their ImageNet
  statistics and affine terms instead of the statistics of 8-image batches, as detectors fine-tuned with
  small batches usually do (detectron2's FrozenBatchNorm2d). The BiFPN's and heads' batch norms, which
  start from nothing, still learn;
- **bf16 autocast** (`bf16`): convolutions in bfloat16 where the CPU has native bf16 (AMX, AVX-512 BF16),
  weights and the optimizer in float32;
- **channels_last**: oneDNN's convolutions prefer NHWC on CPU.

Freezing only applies to a pretrained backbone (freezing random weights would teach nothing). It keeps the
state dict unchanged, so checkpoints load as before: frozen parameters just get no gradient, and a frozen
batch norm is switched to eval mode by a forward pre-hook whenever it runs, whatever `model.train()` said.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext

import torch
from torch import nn


def backbones(model: nn.Module) -> list[nn.Module]:
    """Every effdet backbone in the model (one; one per node for the per-class layout)."""
    return [m.backbone for m in model.modules() if hasattr(m, "backbone") and hasattr(m.backbone, "blocks")]


def backbone_stages(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's stages in input order: the stem (conv and its batch norm), then each block group."""
    stem = nn.ModuleList([backbone.conv_stem, backbone.bn1])
    return [stem, *backbone.blocks]


def _batch_norms(module: nn.Module) -> Iterator[nn.modules.batchnorm._BatchNorm]:
    return (m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def _eval_mode(module: nn.Module, args) -> None:
    module.training = False


def freeze(model: nn.Module, stages: int = 0, batch_norm: bool = False) -> dict[str, int]:
    """Freeze the first `stages` backbone stages (no gradient, batch norm in eval mode) and, with
    `batch_norm`, every batch norm of the backbone. Returns what was frozen (parameters, batch norms)."""
    params, norms = 0, 0
    for bb in backbones(model):
        parts = backbone_stages(bb)[: max(0, stages)]
        for part in parts:
            for p in part.parameters():
                if p.requires_grad:
                    p.requires_grad_(False)
                    params += p.numel()
        frozen_norms = list(_batch_norms(bb)) if batch_norm else [bn for part in parts for bn in _batch_norms(part)]
        for bn in frozen_norms:
            if getattr(bn, "_labeler_frozen", False):
                continue
            bn.register_forward_pre_hook(_eval_mode)
            bn._labeler_frozen = True
            bn.training = False
            for p in bn.parameters():
                if p.requires_grad:
                    p.requires_grad_(False)
                    params += p.numel()
            norms += 1
    return {"parameters": params, "batch_norms": norms}


def bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 natively (oneDNN's own check: AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_bf16(setting: str | bool | None) -> bool:
    """`auto` (the default): on where the CPU has native bf16; `on`/`off` (or a bool) as given."""
    if isinstance(setting, bool):
        return setting
    if setting in (None, "auto"):
        return bf16_supported()
    if setting in ("on", "true", "1"):
        return True
    if setting in ("off", "false", "0"):
        return False
    raise ValueError(f"bf16 must be auto, on or off (got {setting!r})")


def autocast(device: torch.device, cuda_amp: bool, cpu_bf16: bool):
    """The forward pass's autocast: float16 on CUDA with AMP, bfloat16 on CPU when asked, else none."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16, enabled=cuda_amp)
    if cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()

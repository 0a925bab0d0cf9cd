"""The detector factory and the offline backbone weights' key mapping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inference.backbones import block_layout, load_source_state_dict, map_source_keys
from inference.models import MODEL_SPECS, ModelError, build_model, check_image_size

# EfficientNet-Lite0 per stage: (blocks, stride); kernel sizes and expansion are read from the file itself.
LITE0_STAGES = [(1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1)]


def _same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TensorFlow 'SAME' padding, as the tf_ EfficientNets were trained with."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _bn(x, sd, prefix):
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
                        sd[f"{prefix}.bias"], training=False, eps=1e-3)


def _conv(x, w, stride=1, groups=1):
    return F.conv2d(_same_pad(x, w.shape[-1], stride), w, stride=stride, groups=groups)


def reference_lite0_features(sd: dict, x: torch.Tensor) -> list[torch.Tensor]:
    """A plain functional EfficientNet-Lite0 over the packaged state dict, in its own key names:
    the features after stages 2, 4 and 6 (strides 8, 16, 32), which effdet's BiFPN consumes."""
    x = F.relu6(_bn(_conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    feats, flat = [], 0
    for stage, (repeats, stride) in enumerate(LITE0_STAGES):
        for i in range(repeats):
            p = f"_blocks.{flat}"
            s = stride if i == 0 else 1
            h = x
            if f"{p}._expand_conv.weight" in sd:
                h = F.relu6(_bn(_conv(h, sd[f"{p}._expand_conv.weight"]), sd, f"{p}._bn0"))
            dw = sd[f"{p}._depthwise_conv.weight"]
            h = F.relu6(_bn(_conv(h, dw, s, groups=dw.shape[0]), sd, f"{p}._bn1"))
            h = _bn(_conv(h, sd[f"{p}._project_conv.weight"]), sd, f"{p}._bn2")
            x = h + x if s == 1 and h.shape == x.shape else h
            flat += 1
        if stage in (2, 4, 6):
            feats.append(x)
    return feats


def test_mapped_backbone_gives_the_same_features_as_the_packaged_state_dict():
    model = build_model("tf_efficientdet_lite0", num_classes=3, image_size=128, pretrained="package").eval()
    source = load_source_state_dict("tf_efficientnet_lite0")
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.backbone(x)
        ref = reference_lite0_features(source, x)
    assert [f.shape for f in ours] == [f.shape for f in ref]
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # and a backbone without pretraining computes something else (the test can fail)
    fresh = build_model("tf_efficientdet_lite0", num_classes=3, image_size=128, pretrained="none").eval()
    with torch.no_grad():
        assert not torch.allclose(fresh.backbone(x)[-1], ref[-1], atol=1e-2)


def test_key_mapping_covers_every_backbone_tensor_once():
    model = build_model("tf_efficientdet_lite0", num_classes=1, image_size=128, pretrained="none")
    mapped = map_source_keys(load_source_state_dict("tf_efficientnet_lite0"), model.backbone)
    own = model.backbone.state_dict()
    assert set(mapped) == set(own)
    assert all(mapped[k].shape == own[k].shape for k in own)
    assert len(block_layout(model.backbone)) == sum(r for r, _ in LITE0_STAGES)


@pytest.mark.parametrize("name", ["tf_efficientdet_lite0", "tf_efficientdet_lite1", "efficientdet_d0"])
def test_factory_builds_every_registered_model_with_one_class_per_node(name):
    assert name in MODEL_SPECS
    model = build_model(name, num_classes=11, image_size=128, pretrained="auto").eval()
    with torch.no_grad():
        cls_out, box_out = model(torch.zeros(1, 3, 128, 128))
    anchors_per_cell = len(model.config.aspect_ratios) * model.config.num_scales
    assert cls_out[0].shape[1] == 11 * anchors_per_cell
    assert box_out[0].shape[1] == 4 * anchors_per_cell
    assert len(cls_out) == 5


def test_lite1_package_weights_load():
    model = build_model("tf_efficientdet_lite1", num_classes=2, image_size=128, pretrained="package")
    source = load_source_state_dict("tf_efficientnet_lite1")
    torch.testing.assert_close(model.backbone.conv_stem.weight, source["_conv_stem.weight"])


def test_bad_model_options_are_refused_clearly():
    with pytest.raises(ModelError, match="unknown model 'yolo'"):
        build_model("yolo")
    with pytest.raises(ModelError, match="no packaged offline weights"):
        build_model("efficientdet_d0", pretrained="package")
    with pytest.raises(ModelError, match="multiple of 64"):
        check_image_size(300)

"""The masked focal loss: effdet's loss to the last bit when nothing is masked; exactly zero gradient
where the taxonomy says "unknown"."""

from __future__ import annotations

import pytest
import torch
from effdet.anchors import AnchorLabeler, Anchors
from effdet.loss import loss_fn

from inference.encoding import encode_boxes, group_mask
from inference.loss import TaxonomyAnchorLabeler, loss_from_config, masked_loss_fn
from inference.models import build_model
from projects.taxonomy import default_super_taxonomy

SIZE = 128


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_model("tf_efficientdet_lite0", num_classes=11, image_size=SIZE, pretrained="none")
    anchors = Anchors.from_config(model.config)
    x = torch.randn(3, 3, SIZE, SIZE)
    return model, anchors, x


def _boxes():
    # yxyx in input pixels, classes 1-based (effdet's convention); the third image has no box
    boxes = [torch.tensor([[10.0, 12.0, 60.0, 50.0], [70.0, 64.0, 120.0, 126.0]]),
             torch.tensor([[30.0, 30.0, 90.0, 100.0]]),
             torch.zeros(0, 4)]
    classes = [torch.tensor([2.0, 7.0]), torch.tensor([11.0]), torch.zeros(0)]
    return boxes, classes


def _effdet_loss(model, anchors, x, boxes, classes):
    cls_t, box_t, npos = AnchorLabeler(anchors, 11, match_threshold=0.5).batch_label_anchors(boxes, classes)
    c = model.config
    cls_out, box_out = model(x)
    return loss_fn(cls_out, box_out, cls_t, box_t, npos, num_classes=11, alpha=c.alpha, gamma=c.gamma,
                   delta=c.delta, box_loss_weight=c.box_loss_weight, label_smoothing=c.label_smoothing,
                   legacy_focal=c.legacy_focal), (cls_t, box_t, npos)


def _ours(model, anchors, x, boxes, classes, masks=None, unknown=None, weights=None, ignore_band=None):
    onehot = [torch.nn.functional.one_hot(c.long() - 1, 11).float() if len(c) else torch.zeros(0, 11)
              for c in classes]
    labeler = TaxonomyAnchorLabeler(anchors, 11, ignore_band=ignore_band)
    masks = torch.ones(len(boxes), 11) if masks is None else masks
    t = labeler.label(boxes, onehot, masks, unknown=unknown, box_weights=weights)
    cls_out, box_out = model(x)
    return loss_from_config(cls_out, box_out, t, model.config, 11), t, (cls_out, box_out)


def test_all_ones_mask_equals_effdets_loss_to_the_last_bit(setup):
    model, anchors, x = setup
    model.train()
    boxes, classes = _boxes()
    torch.manual_seed(1)
    (ref_total, ref_cls, ref_box), (cls_t, box_t, npos) = _effdet_loss(model, anchors, x, boxes, classes)
    torch.manual_seed(1)
    (total, cls, box), t, _ = _ours(model, anchors, x, boxes, classes)
    assert torch.equal(total, ref_total) and torch.equal(cls, ref_cls) and torch.equal(box, ref_box)
    assert ref_total.item() > 0 and ref_box.item() > 0
    # the targets are effdet's too
    assert torch.equal(t.num_positives, npos)
    for lvl in range(5):
        assert torch.equal(t.box[lvl], box_t[lvl])
        onehot = torch.nn.functional.one_hot(cls_t[lvl].clamp(min=0), 11).float() * (cls_t[lvl] >= 0).unsqueeze(-1)
        assert torch.equal(t.cls[lvl], onehot)


def test_a_masked_image_class_pair_gets_exactly_zero_gradient(setup):
    model, anchors, x = setup
    model.eval()
    boxes, classes = _boxes()
    masks = torch.ones(3, 11)
    masks[0, 6] = 0.0  # image 0's project does not label class 7 (index 6), although it has such a box
    masks[1, 0] = 0.0
    (total, _, _), _, (cls_out, _) = _ours(model, anchors, x, boxes, classes, masks=masks)
    grads = torch.autograd.grad(total, cls_out)
    for g in grads:
        g = g.view(g.shape[0], -1, 11, *g.shape[2:])  # [B, A, K, H, W]
        assert torch.count_nonzero(g[0, :, 6]) == 0
        assert torch.count_nonzero(g[1, :, 0]) == 0
        assert torch.count_nonzero(g[2, :, 6]) > 0 and torch.count_nonzero(g[0, :, 5]) > 0  # others still learn


def test_ignore_band_and_box_weights(setup):
    model, anchors, x = setup
    model.eval()
    boxes, classes = _boxes()
    (_, _, box_full), t_plain, _ = _ours(model, anchors, x, boxes, classes)
    (_, _, box_half), _, _ = _ours(model, anchors, x, boxes, classes,
                                   weights=[torch.full((len(b),), 0.5) for b in boxes])
    torch.testing.assert_close(box_half, box_full * 0.5)
    _, t_band, _ = _ours(model, anchors, x, boxes, classes, ignore_band=(0.4, 0.5))
    ignored = sum(int((w[..., 0] == 0).sum()) for w in t_band.cls_weight)
    assert ignored > 0 and all((w == 1).all() for w in t_plain.cls_weight)


def test_descendants_of_a_box_node_are_not_pushed_down():
    """A `person` box of a project that labels both `person` and `pedestrian_child` is a positive for
    person; whether it is a child is unknown, so pedestrian_child gets no gradient at its anchors; naive
    training pushes pedestrian_child down there."""
    sup = default_super_taxonomy()
    K = len(sup)
    torch.manual_seed(0)
    model = build_model("tf_efficientdet_lite0", num_classes=K, image_size=SIZE, pretrained="none").eval()
    anchors = Anchors.from_config(model.config)
    x = torch.randn(1, 3, SIZE, SIZE)
    box = torch.tensor([[20.0, 40.0, 110.0, 80.0]])
    labeled = {"person", "pedestrian_child"}
    group = tuple(sup.names)
    child, person = sup.index["pedestrian_child"], sup.index["person"]
    results = {}
    for mode in ("tlm", "naive"):
        tgt, unk = encode_boxes(sup, group, ["person"], mode)
        mask = group_mask(group, labeled, mode)
        t = TaxonomyAnchorLabeler(anchors, K).label([box], [tgt], mask.unsqueeze(0), unknown=[unk])
        cls_out, box_out = model(x)
        total, _, _ = loss_from_config(cls_out, box_out, t, model.config, K)
        grads = torch.autograd.grad(total, cls_out)
        pos = [tc[0, ..., person] > 0 for tc in t.cls]  # anchors matched to the box

        def at_box(k, grads=grads, pos=pos):
            return torch.cat([g.view(1, -1, K, *g.shape[2:])[0, :, k].permute(1, 2, 0)[p] for g, p in zip(grads, pos)])

        g_child, g_person = at_box(child), at_box(person)
        results[mode] = (g_child, g_person)
    tlm_child, tlm_person = results["tlm"]
    naive_child, _ = results["naive"]
    assert tlm_child.numel() > 0
    assert torch.count_nonzero(tlm_child) == 0  # unknown: no push either way
    assert (tlm_person < 0).all()  # a positive: its logit is pushed up (negative gradient)
    assert (naive_child > 0).all()  # naive: pushed down towards background


def test_encoding_puts_positives_on_the_node_and_its_ancestors():
    sup = default_super_taxonomy()
    group = tuple(sup.names)
    tgt, unk = encode_boxes(sup, group, ["pedestrian_adult", "vehicle"], "tlm")
    assert {group[i] for i in torch.nonzero(tgt[0]).flatten()} == {"pedestrian_adult", "person"}
    assert {group[i] for i in torch.nonzero(tgt[1]).flatten()} == {"vehicle"}
    assert {group[i] for i in torch.nonzero(unk[1]).flatten()} == {"car", "truck", "bus", "motorcycle"}
    m = group_mask(group, frozenset({"person", "pedestrian_adult", "pedestrian_child"}), "tlm")
    assert {group[i] for i in torch.nonzero(m).flatten()} == {"person", "pedestrian_adult", "pedestrian_child"}
    assert bool((group_mask(group, frozenset({"person"}), "naive") == 1).all())
    # a single-class group for `car`: a vehicle box is unknown for it, a person box is irrelevant
    tgt, unk = encode_boxes(sup, ("car",), ["vehicle", "person", "car"], "tlm")
    assert tgt.flatten().tolist() == [0.0, 0.0, 1.0] and unk.flatten().tolist() == [1.0, 0.0, 0.0]


def test_loss_is_finite_with_no_box_at_all(setup):
    model, anchors, x = setup
    model.eval()
    (total, _, box), _, _ = _ours(model, anchors, x, [torch.zeros(0, 4)] * 3, [torch.zeros(0)] * 3)
    assert torch.isfinite(total) and box.item() == 0.0
    assert masked_loss_fn  # exported name used by training

"""Hierarchical decoding: a node never outscores its ancestors, and a node with no positive emits nothing."""

from __future__ import annotations

import numpy as np
import torch

from inference.architectures import Group, build_detector
from inference.checkpoint import Checkpoint
from inference.decoding import GroupDecoding, trained_nodes
from inference.predictor import Predictor
from projects.taxonomy import default_super_taxonomy

PARENTS = {"vehicle": None, "car": "vehicle", "sedan": "car", "person": None, "child": "person"}


def level(values: list[float], anchors: int = 2, h: int = 2, w: int = 3) -> torch.Tensor:
    """One effdet class-output level [1, A*C, H, W] holding `values` per class at every anchor/cell."""
    c = len(values)
    x = torch.tensor(values).view(1, 1, c, 1, 1).expand(1, anchors, c, h, w)
    return x.reshape(1, anchors * c, h, w).clone()


def columns(out: torch.Tensor, c: int) -> list[float]:
    b, ac, h, w = out.shape
    return out.reshape(b, ac // c, c, h, w)[0, 0, :, 0, 0].tolist()


def test_children_are_capped_by_every_ancestor():
    nodes = ("vehicle", "car", "sedan", "person", "child")
    dec = GroupDecoding(nodes, PARENTS, trained=None)
    out = dec.logits([level([-1.0, 3.0, 5.0, 2.0, -4.0])])[0]
    assert columns(out, 5) == [-1.0, -1.0, -1.0, 2.0, -4.0]


def test_an_untrained_node_emits_nothing_and_a_missing_middle_node_is_skipped():
    nodes = ("vehicle", "sedan", "person")  # this head has no `car` column: sedan is capped by vehicle
    dec = GroupDecoding(nodes, PARENTS, trained={"vehicle", "sedan"})
    out = columns(dec.logits([level([1.0, 4.0, 6.0])])[0], 3)
    assert out[:2] == [1.0, 1.0] and torch.sigmoid(torch.tensor(out[2])).item() == 0.0


def test_trained_nodes_from_the_data_snapshot():
    assert trained_nodes({"data": {"node_positives": {"vehicle": 3, "car": 0}}}) == {"vehicle"}
    assert trained_nodes({"data": {"projects": {"A": {"labeled_nodes": ["person"]},
                                                "C": {"labeled_nodes": ["vehicle"]}}}}) == {"person", "vehicle"}
    assert trained_nodes({"data": {}}) is None


def _predictor(biases: dict[str, float], positives: dict[str, int]) -> Predictor:
    sup = default_super_taxonomy()
    torch.manual_seed(0)
    group = Group("all", tuple(sup.names))
    model = build_detector("single", "tf_efficientdet_lite0", [group], 128)
    bias = model.net.class_net.predict.conv_pw.bias
    c = len(sup.names)
    with torch.no_grad():
        bias.view(-1, c)[:] = -8.0
        for node, value in biases.items():
            bias.view(-1, c)[:, sup.names.index(node)] = value
    meta = {"model": "tf_efficientdet_lite0", "image_size": 128, "layout": "single", "groups": [group.to_dict()],
            "super_taxonomy": sup.to_dict(), "approach": "tlm", "version": "t",
            "normalisation": {"mean": [127.5] * 3, "std": [127.5] * 3}, "data": {"node_positives": positives}}
    return Predictor(Checkpoint(None, model, meta), device="cpu", min_score=0.05)


def test_the_predictor_never_shows_a_child_above_its_parent_nor_an_untrained_node():
    image = np.full((96, 128, 3), 90, np.uint8)
    # `car` fires everywhere at its (untrained) prior while `vehicle` is sure of nothing: before hierarchical
    # decoding every top-100 slot was a car
    (dets,) = _predictor({"car": 4.0, "traffic_sign": 2.0}, {"vehicle": 5, "car": 5, "traffic_sign": 5}
                         ).predict([image])
    assert not [d for d in dets if d.node in ("car", "vehicle")]
    assert {d.node for d in dets} == {"traffic_sign"}
    (dets,) = _predictor({"vehicle": 1.0, "car": 4.0, "traffic_sign": 2.0},
                         {"vehicle": 5, "car": 5, "traffic_sign": 0}).predict([image])
    assert dets and not [d for d in dets if d.node == "traffic_sign"]
    vehicle_best = max(d.score for d in dets if d.node == "vehicle")
    assert max(d.score for d in dets if d.node == "car") <= vehicle_best + 1e-6


def test_predictions_cached_before_hierarchical_decoding_are_dropped(tmp_path, monkeypatch):
    """Schema v4: a cached prediction of a child above its parent must not be shown after the upgrade."""
    from projects import schema, workspace
    from projects.imaging import ImageInfo
    from projects.workspace import Workspace

    with monkeypatch.context() as m:  # a workspace as Labeler wrote it before v4
        m.setattr(workspace, "MIGRATIONS", schema.MIGRATIONS[:3])
        m.setattr(workspace, "SCHEMA_VERSION", 3)
        ws = Workspace.create(tmp_path / "w")
        ws.add_project("P")
        (img,) = ws.insert_images(ws.project_id("P"), [ImageInfo(tmp_path / "a.jpg", "a" * 64, 64, 48)]).added
        mid = ws.register_model("v1", tmp_path / "m")
        ws.save_predictions(img, mid, [("car", (1, 2, 3, 4), 0.9), ("vehicle", (1, 2, 3, 4), 0.1)])
        assert ws.schema_version == 3 and ws.predictions(img, mid)
        ws.close()
    with Workspace.open(tmp_path / "w") as ws:
        assert ws.schema_version == schema.SCHEMA_VERSION >= 4
        assert ws.predictions(img, mid) is None  # predicted again when next shown

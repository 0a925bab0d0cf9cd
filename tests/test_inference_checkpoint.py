"""Checkpoints: safetensors + JSON, refused clearly when corrupt or trained on another taxonomy."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from inference.architectures import Group, build_detector
from inference.checkpoint import CheckpointError, load_checkpoint, read_meta, save_checkpoint
from inference.predictor import Detection, Predictor
from inference.registry import model_id_for, register_checkpoint
from projects.taxonomy import Node, SuperTaxonomy, default_super_taxonomy


def _meta(sup, layout="single", groups=None):
    groups = groups or [Group("all", tuple(sup.names))]
    return {"model": "tf_efficientdet_lite0", "image_size": 128, "layout": layout,
            "groups": [g.to_dict() for g in groups], "super_taxonomy": sup.to_dict(), "approach": "tlm",
            "normalisation": {"mean": [127.5] * 3, "std": [127.5] * 3}, "data": {"images": 0}, "metrics": {}}


@pytest.fixture
def ckpt(tmp_path):
    sup = default_super_taxonomy()
    torch.manual_seed(0)
    model = build_detector("single", "tf_efficientdet_lite0", [Group("all", tuple(sup.names))], 128)
    save_checkpoint(tmp_path / "m", model, _meta(sup))
    return tmp_path / "m", model, sup


def test_round_trip_restores_every_tensor_and_the_metadata(ckpt):
    folder, model, sup = ckpt
    loaded = load_checkpoint(folder, sup)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    assert loaded.node_names == sup.names
    meta = read_meta(folder)
    assert meta["weights"]["dtype"] == "float32" and len(meta["weights"]["sha256"]) == 64
    assert loaded.version == meta["version"]


def test_float16_checkpoint_is_half_the_size_and_loads_as_float32(ckpt, tmp_path):
    folder, model, sup = ckpt
    save_checkpoint(tmp_path / "h", model, _meta(sup), dtype="float16")
    full, half = (folder / "model.safetensors").stat().st_size, (tmp_path / "h/model.safetensors").stat().st_size
    assert half < 0.6 * full
    loaded = load_checkpoint(tmp_path / "h", sup)
    w = loaded.model.net.class_net.predict.conv_pw.weight
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, model.net.class_net.predict.conv_pw.weight, atol=1e-3, rtol=1e-3)


def test_corrupt_weights_are_refused_naming_the_file(ckpt):
    folder, _, sup = ckpt
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt"):
        load_checkpoint(folder, sup)


def test_truncated_weights_are_refused_and_a_hash_is_required(ckpt):
    folder, _, sup = ckpt
    meta = json.loads((folder / "model.json").read_text())
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    meta["weights"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()  # the hash matches: parsing fails
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(folder, sup)
    meta["weights"].pop("sha256")  # without the hash nothing pins the weights: refused
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"model\.json: weights\.sha256 must be"):
        load_checkpoint(folder, sup)


def test_missing_or_broken_json_is_refused(ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="nowhere: checkpoint folder not found"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="model.json: not found"):
        load_checkpoint(tmp_path / "empty")
    folder, _, _ = ckpt
    (folder / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="model.json: not a readable"):
        load_checkpoint(folder)


def test_taxonomy_mismatch_is_refused_but_appended_nodes_are_accepted(ckpt):
    folder, _, sup = ckpt
    reordered = SuperTaxonomy([Node("person"), *[n for n in sup.nodes if n.name != "person"]])
    with pytest.raises(CheckpointError, match="super-taxonomy mismatch at node 0"):
        load_checkpoint(folder, reordered)
    other = SuperTaxonomy([Node("rbc"), Node("wbc")])
    with pytest.raises(CheckpointError, match="model.json"):
        load_checkpoint(folder, other)
    extended = SuperTaxonomy([*sup.nodes, Node("animal")])
    assert load_checkpoint(folder, extended).node_names == sup.names


def test_predictor_returns_detections_in_each_images_pixels(ckpt):
    folder, _, sup = ckpt
    p = Predictor.from_checkpoint(folder, device="cpu", threads=1, min_score=0.005)
    assert p.node_names == sup.names and p.image_size == 128 and isinstance(p.version, str)
    images = [np.random.default_rng(0).integers(0, 255, (90, 300, 3), dtype=np.uint8),
              np.full((400, 120, 3), 80, np.uint8)]
    out = p.predict(images)
    assert len(out) == 2
    for img, dets in zip(images, out):
        assert dets, "an untrained head scores anchors near its prior of 0.01"
        assert all(isinstance(d, Detection) and d.node in sup.names and d.score >= 0.005 for d in dets)
        h, w = img.shape[:2]
        assert all(0 <= d.box[0] <= d.box[2] <= w and 0 <= d.box[1] <= d.box[3] <= h for d in dets)
        scores = [d.score for d in dets]
        assert scores == sorted(scores, reverse=True)
    assert p.predict([]) == []
    with pytest.raises(ValueError, match="image 0"):
        p.predict([np.zeros((10, 10), np.uint8)])
    assert p.time_forward(repeats=2) > 0


def test_multi_group_layouts_merge_into_node_detections(tmp_path):
    sup = default_super_taxonomy()
    groups = [Group("A", ("person",)), Group("B", ("car", "person"))]  # nodes in super-taxonomy order
    model = build_detector("heads", "tf_efficientdet_lite0", groups, 128)
    save_checkpoint(tmp_path / "h", model, _meta(sup, "heads", groups))
    dets = Predictor.from_checkpoint(tmp_path / "h", min_score=0.005).predict([np.zeros((64, 64, 3), np.uint8)])[0]
    assert {d.node for d in dets} <= {"person", "car"} and dets


def test_register_checkpoint(ckpt, ws):
    folder, _, _ = ckpt
    mid = register_checkpoint(ws, folder)
    row = ws.models()[-1]
    assert row["id"] == mid and row["version"] == read_meta(folder)["version"]
    assert json.loads(row["config"])["layout"] == "single"
    assert model_id_for(ws, folder) == mid

"""The workspace dataset, training (tiny: a few steps at 128 px) and resuming."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from inference.approaches import APPROACHES, LossComputer
from inference.augment import augment
from inference.checkpoint import load_checkpoint, read_meta
from inference.dataset import OFF_RULE_WEIGHT, DetectionDataset, load_training_data
from inference.letterbox import boxes_from_letterbox, boxes_to_letterbox, letterbox
from inference.train import TrainConfig, Trainer, TrainError, train
from labeler.cli import main
from projects.split import split_of
from projects.workspace import Workspace

TINY = dict(image_size=128, batch_size=4, progress=False, evaluate=False)


@pytest.fixture
def demo_copy(demo_ws, tmp_path):
    folder = tmp_path / "ws"
    shutil.copytree(demo_ws, folder)
    return folder


def test_training_data_holds_submitted_images_with_masks_splits_and_rule_weights(demo_ws):
    with Workspace.open(demo_ws) as ws:
        data = load_training_data(ws)
        submitted = {i for p in ws.project_names() for i in ws.image_ids(p, status="submitted")}
        assert {s.image_id for s in data.samples} == submitted and len(submitted) < 24
        for s in data.samples:
            assert s.split == split_of(ws.image(s.image_id)["split_bucket"])
            assert set(s.nodes) <= data.labeled[s.project]
            assert len(s.boxes) == len(s.nodes) == len(s.box_weights)
        assert data.labeled["A"] == {"person"}
        assert {"person", "vehicle", "car"} <= data.labeled["B"] and "person" not in data.labeled["C"]
        c_weights = {float(w) for s in data.samples if s.project == "C" for w in s.box_weights}
        b_vehicle = {float(w) for s in data.samples if s.project == "B"
                     for n, w in zip(s.nodes, s.box_weights) if n in ("car", "truck", "bus")}
        assert c_weights == {np.float32(OFF_RULE_WEIGHT)}  # C leaves mirrors out; the target convention has them
        assert b_vehicle == {1.0}
        snap = data.snapshot()
        assert set(snap["projects"]) == {"A", "B", "C"} and len(snap["fingerprint"]) == 16


def test_unknown_project_is_refused(demo_ws):
    with Workspace.open(demo_ws) as ws, pytest.raises(TrainError, match="no project named 'Z'"):
        Trainer(ws, "/nonexistent", TrainConfig(epochs=1, projects=["Z"], **TINY))


def test_augmentation_moves_boxes_with_pixels_and_letterbox_round_trips():
    img = np.zeros((60, 100, 3), np.uint8)
    img[10:30, 5:25] = 255  # a white block at x 5..25, y 10..30
    out, boxes, keep = augment(img, np.array([[5, 10, 25, 30]], np.float32), v2.RandomHorizontalFlip(p=1.0))
    assert keep.tolist() == [0]
    np.testing.assert_allclose(boxes, [[75, 10, 95, 30]])
    ys, xs = np.nonzero(out[..., 0])
    assert (xs.min(), xs.max() + 1) == (75, 95)
    boxed, scale = letterbox(img, 128)
    assert boxed.shape == (128, 128, 3) and scale == pytest.approx(1.28)
    b = boxes_to_letterbox(np.array([[5, 10, 25, 30]]), scale)
    np.testing.assert_allclose(boxes_from_letterbox(b, scale, 100, 60), [[5, 10, 25, 30]], rtol=1e-6)


def test_dataset_items_are_normalised_letterboxed_tensors(demo_ws):
    with Workspace.open(demo_ws) as ws:
        data = load_training_data(ws)
    ds = DetectionDataset(data.samples[:2], 128, [127.5] * 3, [127.5] * 3, train=False)
    x, t = ds[0]
    assert x.shape == (3, 128, 128) and -1.001 <= float(x.min()) and float(x.max()) <= 1.001
    assert t["boxes_yxyx"].shape == (len(data.samples[0].nodes), 4)
    np.testing.assert_allclose(t["boxes_yxyx"][:, [1, 0, 3, 2]].numpy(), data.samples[0].boxes * t["scale"], rtol=1e-5)


@pytest.mark.parametrize("name", sorted(APPROACHES))
def test_every_approach_trains_a_few_steps_and_saves_a_loadable_checkpoint(demo_copy, tmp_path, name):
    projects = ["A", "C"] if name == "per-class" else None  # two single-class models keep the test short
    with Workspace.open(demo_copy) as ws:
        result = train(ws, tmp_path / name, TrainConfig(approach=name, epochs=1, max_steps=2, projects=projects,
                                                        **TINY))
        assert result.model_id == ws.models()[-1]["id"]
        ck = load_checkpoint(result.folder, ws.super_taxonomy())
    meta = read_meta(result.folder)
    assert meta["approach"] == name and meta["metrics"]["train"]["steps"] == 2
    assert meta["data"]["projects"]["A"]["labeled_nodes"] == ["person"]
    assert not (result.folder / "train_state").exists()
    if name == "heads":
        assert [g.name for g in ck.model.groups] == ["A", "B", "C"]
        assert ck.model.groups[0].nodes == ("person",) and ck.model.groups[2].nodes == ("vehicle",)
    if name == "per-class":
        assert [g.nodes for g in ck.model.groups] == [("vehicle",), ("person",)]


def test_training_lowers_the_loss_on_a_fixed_batch(demo_ws):
    """The trainer's loss path learns: a few steps on one batch lower its loss."""
    with Workspace.open(demo_ws) as ws:
        trainer = Trainer(ws, "/unused", TrainConfig(epochs=1, **TINY))
    from inference.architectures import build_detector

    torch.manual_seed(0)
    model = build_detector("single", "tf_efficientdet_lite0", trainer.groups, 128, "package")
    ds = DetectionDataset(trainer.train_samples[:4], 128, [127.5] * 3, [127.5] * 3, train=False)
    x = torch.stack([ds[i][0] for i in range(4)])
    batch = [ds[i][1] for i in range(4)]
    phase = trainer.phases[0]
    loss_fn = LossComputer(trainer.app, model, trainer.data, trainer.groups)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for _ in range(6):
        loss, _ = loss_fn(x, batch, phase)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_interrupted_training_resumes_where_it_stopped(demo_copy, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    original = LossComputer.__call__

    def flaky(self, x, batch, phase):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, x, batch, phase)

    out = tmp_path / "run"
    cfg = TrainConfig(epochs=2, **TINY)
    with Workspace.open(demo_copy) as ws:
        monkeypatch.setattr(LossComputer, "__call__", flaky)
        with pytest.raises(KeyboardInterrupt):
            train(ws, out, cfg)
        state = json.loads((out / "train_state/state.json").read_text())
        assert state["counters"]["steps"] == 2
        assert not (out / "model.json").exists()
        with pytest.raises(TrainError, match="other settings"):
            train(ws, out, TrainConfig(epochs=3, **TINY))
        monkeypatch.setattr(LossComputer, "__call__", original)
        result = train(ws, out, cfg)
    assert "resuming" in capsys.readouterr().out
    total = result.metrics["train"]["steps"]
    steps_per_epoch = len(Trainer(Workspace.open(demo_copy), out, cfg).train_samples) // 4
    assert total == 2 * steps_per_epoch


def test_labeler_train_cli(demo_copy, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", str(demo_copy), "--out", str(out), "--epochs", "0.5", "--image-size", "128",
                 "--batch-size", "4", "--no-eval"]) == 0
    assert "registered as model" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file()
    assert main(["train", str(demo_copy), "--out", str(out), "--epochs", "1", "--minutes", "1"]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert main(["train", str(demo_copy), "--out", str(out), "--epochs", "1", "--approach", "magic"]) == 2
    assert "unknown approach 'magic'" in capsys.readouterr().err
    assert main(["train", str(demo_copy), "--out", str(out), "--epochs", "1", "--image-size", "100"]) == 2
    assert "multiple of 64" in capsys.readouterr().err

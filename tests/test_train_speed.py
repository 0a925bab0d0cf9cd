"""Cheaper CPU training steps still learn: with frozen batch norm and early stages, in channels_last (and bf16 where
the CPU has it), the loss on a fixed batch goes down, the frozen part stays as it was, and `labeler train`'s
options reach the model."""

from __future__ import annotations

import shutil

import pytest
import torch

from inference.approaches import LossComputer
from inference.architectures import build_detector
from inference.checkpoint import load_checkpoint
from inference.dataset import DetectionDataset
from inference.train import TrainConfig, Trainer
from inference.train_speed import autocast, backbone_stages, backbones, bf16_supported, freeze
from projects.workspace import Workspace

TINY = dict(image_size=128, batch_size=4, progress=False, evaluate=False, register=False)


def _fixed_batch(trainer):
    ds = DetectionDataset(trainer.train_samples[:4], 128, [127.5] * 3, [127.5] * 3, train=False)
    return torch.stack([ds[i][0] for i in range(4)]), [ds[i][1] for i in range(4)]


@pytest.mark.parametrize("bf16", [False, pytest.param(True, marks=pytest.mark.skipif(
    not bf16_supported(), reason="this CPU has no native bfloat16"))])
def test_frozen_batch_norm_and_stages_in_channels_last_still_lower_the_loss(demo_ws, bf16):
    with Workspace.open(demo_ws) as ws:
        trainer = Trainer(ws, "/unused", TrainConfig(epochs=1, **TINY))
    torch.manual_seed(0)
    model = build_detector("single", "tf_efficientdet_lite0", trainer.groups, 128, "package")
    model = model.to(memory_format=torch.channels_last)
    frozen = freeze(model, stages=3, batch_norm=True)
    assert frozen["parameters"] > 0 and frozen["batch_norms"] > 0
    (bb,) = backbones(model)
    stem_before = bb.conv_stem.weight.detach().clone()
    deep_bn = bb.blocks[5][0].bn1  # a batch norm past the frozen stages: frozen by freeze_bn only
    stats_before = deep_bn.running_mean.clone()
    head_before = model.net.class_net.predict.conv_pw.weight.detach().clone()
    x, batch = _fixed_batch(trainer)
    x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = LossComputer(trainer.app, model, trainer.data, trainer.groups)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()  # the frozen batch norms stay in eval mode whatever train() says
    losses = []
    for _ in range(6):
        with autocast(torch.device("cpu"), False, bf16):
            loss, _ = loss_fn(x, batch, trainer.phases[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert torch.equal(bb.conv_stem.weight, stem_before)  # frozen stage: ImageNet weights kept
    assert torch.equal(deep_bn.running_mean, stats_before)  # frozen batch norm: ImageNet statistics kept
    assert not torch.equal(model.net.class_net.predict.conv_pw.weight, head_before)  # the head learned


def test_train_options_freeze_what_they_say_and_are_recorded(demo_ws, tmp_path):
    folder = tmp_path / "ws"
    shutil.copytree(demo_ws, folder)
    cfg = TrainConfig(steps=2, freeze_stages=2, freeze_bn=True, bf16="off", **TINY)
    with Workspace.open(folder) as ws:
        trainer = Trainer(ws, tmp_path / "out", cfg)
        result = trainer.run()
    assert trainer.frozen["batch_norms"] > 0
    ck = load_checkpoint(result.folder)
    reference = build_detector("single", "tf_efficientdet_lite0", ck.model.groups, 128, "package")
    (trained_bb,), (ref_bb,) = backbones(ck.model), backbones(reference)
    for trained, ref in zip(backbone_stages(trained_bb)[:2], backbone_stages(ref_bb)[:2]):
        for a, b in zip(trained.state_dict().values(), ref.state_dict().values()):
            assert torch.equal(a.float(), b.float())  # stem and first block: the packaged ImageNet weights
    later = backbone_stages(trained_bb)[3].state_dict()
    assert any(not torch.equal(a.float(), b.float())
               for k, (a, b) in enumerate(zip(later.values(), backbone_stages(ref_bb)[3].state_dict().values()))
               if "running" not in list(later)[k])  # a later stage learned
    training = ck.meta["training"]
    assert training["freeze_stages"] == 2 and training["freeze_bn"] is True
    assert ck.meta["metrics"]["train"]["bf16"] is False


def test_a_bad_bf16_setting_is_one_line(demo_ws):
    from inference.train import TrainError

    with Workspace.open(demo_ws) as ws, pytest.raises(TrainError, match="bf16 must be auto, on or off"):
        Trainer(ws, "/unused", TrainConfig(epochs=1, bf16="sometimes", **TINY))


def test_labeler_train_takes_the_speed_options(demo_ws, tmp_path, capsys):
    from labeler.cli import main

    folder = tmp_path / "ws"
    shutil.copytree(demo_ws, folder)
    out = tmp_path / "out"
    assert main(["train", str(folder), "--out", str(out), "--steps", "1", "--image-size", "128", "--batch-size", "4",
                 "--no-eval", "--no-register", "--freeze-stages", "0", "--bf16", "off"]) == 0
    training = load_checkpoint(out).meta["training"]
    assert training["freeze_stages"] == 0 and training["freeze_bn"] is False and training["bf16"] == "off"
    capsys.readouterr()
    assert main(["train", str(folder), "--out", str(tmp_path / "o2"), "--steps", "1", "--freeze-stages", "-1"]) == 2
    assert "--freeze-stages must be 0 or more" in capsys.readouterr().err

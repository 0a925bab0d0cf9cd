"""Shared by the tests that run real training or prediction: a tiny untrained checkpoint, and waiting on a child
process for something to happen (failing with its output if it ends first)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import torch

from inference.architectures import Group, build_detector
from inference.checkpoint import save_checkpoint
from projects.taxonomy import default_super_taxonomy


def tiny_checkpoint(folder: Path) -> Path:
    """An untrained Lite0 at 128 px over the whole default super-taxonomy, saved in `folder` (seeded: the same
    weights every time)."""
    sup = default_super_taxonomy()
    torch.manual_seed(0)
    model = build_detector("single", "tf_efficientdet_lite0", [Group("all", tuple(sup.names))], 128)
    meta = {"model": "tf_efficientdet_lite0", "image_size": 128, "layout": "single",
            "groups": [Group("all", tuple(sup.names)).to_dict()], "super_taxonomy": sup.to_dict(),
            "approach": "tlm", "normalisation": {"mean": [127.5] * 3, "std": [127.5] * 3}, "data": {}, "metrics": {}}
    return save_checkpoint(folder, model, meta)


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.communicate()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")

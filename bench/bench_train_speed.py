"""CPU training speed, side by side in one run: today's step against channels_last off, bf16 autocast, frozen
backbone batch norm, frozen early backbone stages and DataLoader worker processes, and their combination.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_train_speed.py [--folder /tmp/bench_train_speed] \
        [--images 90] [--steps 16] [--image-size 256] [--batch 8] [--threads 1] [--only NAME ...] [--json F]

Every variant trains the same freshly built model (tf_efficientdet_lite0, packaged ImageNet backbone, seed 0)
for the same `--steps` on the same batches (the trainer's seeded epochs: same images, same augmentation) with
the trainer's optimizer and schedule, loading each batch in the loop as `labeler train` does. img/s is wall
time over the steps after the first two (data loading included); "loss after N steps" is the mean training
loss of the last four steps, and "held-out loss" the loss of the final weights on 16 validation images
(no augmentation, eval mode, float32): the comparison that says whether a switch costs accuracy. Today's
variant runs first and last, so the drift of the machine's load shows. Prints a Markdown table; never
asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from inference.approaches import LossComputer, approach  # noqa: E402
from inference.architectures import build_detector  # noqa: E402
from inference.dataset import DetectionDataset, collate, load_training_data  # noqa: E402
from inference.distributed import SeededItems  # noqa: E402
from inference.models import model_spec  # noqa: E402
from inference.train import lr_factor  # noqa: E402
from inference.train_speed import autocast, bf16_supported, freeze  # noqa: E402
from projects.demo import build_demo  # noqa: E402
from projects.workspace import Workspace  # noqa: E402

# name -> switches; "today" is what `labeler train` did before this benchmark (fp32, NHWC, nothing frozen)
VARIANTS: dict[str, dict] = {
    "today": {},
    "NCHW (channels_last off)": {"channels_last": False},
    "bf16 autocast": {"bf16": True},
    "frozen backbone BN": {"freeze_bn": True},
    "frozen stem + block 1": {"freeze_stages": 2},
    "frozen stem + blocks 1-2": {"freeze_stages": 3},
    "frozen stem + blocks 1-3": {"freeze_stages": 4},
    "DataLoader, 1 worker": {"workers": 1},
    "bf16 + frozen BN + stem/blocks 1-2": {"bf16": True, "freeze_bn": True, "freeze_stages": 3},
    "frozen BN + stem/blocks 1-2": {"freeze_bn": True, "freeze_stages": 3},
    "today (again)": {},
}


def run_variant(name: str, sw: dict, data, train_samples, val_batch, args) -> dict:
    app = approach("tlm")
    groups = app.groups(data)
    phase = app.phases(data, groups, train_samples)[0]
    norm = model_spec(args.model).normalisation()
    torch.manual_seed(0)
    model = build_detector(app.layout, args.model, groups, args.image_size, "package")
    channels_last = sw.get("channels_last", True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    frozen = freeze(model, sw.get("freeze_stages", 0), sw.get("freeze_bn", False))
    loss_fn = LossComputer(app, model, data, groups)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=1e-4)
    ds = DetectionDataset(phase.samples, args.image_size, norm["mean"], norm["std"], train=True)
    items = SeededItems(ds, 1)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(1)).tolist()
    order = (order * (args.steps * args.batch // len(order) + 1))[: args.steps * args.batch]
    loader = DataLoader(items, batch_size=args.batch, sampler=order, drop_last=True, collate_fn=collate,
                        num_workers=sw.get("workers", 0), persistent_workers=False)
    bf16 = sw.get("bf16", False)
    model.train()
    times, losses = [], []
    t = time.perf_counter()
    for step, (x, batch) in enumerate(loader):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(step / args.steps)
        with autocast(torch.device("cpu"), False, bf16):
            loss, _ = loss_fn(x, batch, phase)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        losses.append(float(loss.detach()))
        now = time.perf_counter()
        times.append(now - t)
        t = now
    model.eval()
    x, batch = val_batch
    with torch.no_grad():
        held_out = float(loss_fn(x.contiguous(memory_format=torch.channels_last) if channels_last else x,
                                 batch, phase)[0])
    steady = times[2:] or times
    return {"variant": name, "switches": sw, "img_s": args.batch * len(steady) / sum(steady),
            "median_step_s": statistics.median(steady), "loss_last4": float(np.mean(losses[-4:])),
            "held_out_loss": held_out, "first_loss": losses[0], "frozen": frozen}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", type=Path, default=Path("/tmp/bench_train_speed"))
    ap.add_argument("--images", type=int, default=90)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="tf_efficientdet_lite0")
    ap.add_argument("--only", nargs="*", default=None, help="variant names (today always runs)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ws_dir = args.folder / "ws"
    if not Workspace.db_path(ws_dir).exists():
        args.folder.mkdir(parents=True, exist_ok=True)
        build_demo(ws_dir, n_images=args.images, seed=5).close()
    with Workspace.open(ws_dir) as ws:
        data = load_training_data(ws)
    train_samples, val = data.split("train"), (data.split("val") + data.split("test"))[:16]
    norm = model_spec(args.model).normalisation()
    vds = DetectionDataset(val, args.image_size, norm["mean"], norm["std"], train=False)
    val_batch = collate([vds[i] for i in range(len(vds))])
    variants = {k: v for k, v in VARIANTS.items() if args.only is None or k in args.only or k.startswith("today")}
    rows = []
    for name, sw in variants.items():
        r = run_variant(name, sw, data, train_samples, val_batch, args)
        rows.append(r)
        print(f"{name}: {r['img_s']:.2f} img/s, loss {r['loss_last4']:.3f}, held-out {r['held_out_loss']:.3f}",
              file=sys.stderr, flush=True)
    base = statistics.mean(r["img_s"] for r in rows if r["variant"].startswith("today"))
    cpu = _cpu_name()
    print(f"\n{cpu}, {os.cpu_count()} cores, {args.threads} torch thread(s), native bf16: {bf16_supported()}; "
          f"{args.model} at {args.image_size} px, batch {args.batch}, {args.steps} steps per variant, "
          f"{len(train_samples)} training images\n")
    print(f"| variant | img/s | × today | loss after {args.steps} steps | held-out loss | frozen parameters |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['img_s']:.2f} | {r['img_s'] / base:.2f} | {r['loss_last4']:.3f} | "
              f"{r['held_out_loss']:.3f} | {r['frozen']['parameters']:,} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


if __name__ == "__main__":
    sys.exit(main())

"""Distributed figures: training and pre-labeling throughput on 1 and N processes (torchrun, DDP), and how
far the N-process loss trajectory is from the one-process one.

    .venv/bin/python bench/bench_distributed.py [--folder /tmp/bench_dist] [--images 60] [--nprocs 1 2]
                                                [--steps 20] [--follow-steps 20] [--image-size 256] [--batch 8]
                                                [--device cpu|cuda] [--only train follow predict]

Training: `labeler train` (1 process) or `labeler train --nproc N`, the same global batch, no evaluation;
img/s is the steady state from the step log (OUT/train_log.jsonl, steps after the first 3) and the wall time
includes starting the processes. Prediction: `labeler predict` (or `--nproc N`) of one project with the
model trained by the one-process run, from an empty cache; wall img/s includes start-up and model loading.
Follow: `labeler train --follow` (or `--nproc N`) on a copy of the workspace, the same global batch, a last
checkpoint at the end of its step budget (evaluated and registered); img/s is the steady state from the
per-rank trace (LABELER_FOLLOW_TRACE, steps after the first 3), the loss gap from the traces' global losses.
On CPU every process gets cores / N torch threads. With `--device cuda` each rank takes one GPU (NCCL, AMP).
Prints a Markdown table; never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from projects.demo import build_demo  # noqa: E402
from projects.workspace import Workspace  # noqa: E402


def labeler(args: list[str], nproc: int, env: dict[str, str] | None = None) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "labeler", *args] + (["--nproc", str(nproc)] if nproc > 1 else [])
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return wall, r.stdout


def steady_img_s(log: Path, skip: int = 3) -> float:
    """Images per second of training between step `skip` and the last step (a step log or a follow trace)."""
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    a, b = rows[min(skip, len(rows) - 2)], rows[-1]
    return (b["images"] - a["images"]) / max(b["seconds"] - a["seconds"], 1e-9)


def losses(log: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in log.read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", default="/tmp/bench_dist")
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--project", default="B")
    ap.add_argument("--follow-steps", type=int, default=20)
    ap.add_argument("--only", nargs="+", default=["train", "follow", "predict"], choices=["train", "follow", "predict"])
    a = ap.parse_args()
    folder = Path(a.folder)
    ws = folder / "ws"
    if not Workspace.db_path(ws).exists():
        build_demo(ws, n_images=a.images, seed=3).close()
    cores = os.cpu_count() or 1
    rows, base_losses, model_dir = [], None, None
    for n in a.nprocs if "train" in a.only or "predict" in a.only else []:
        out = folder / f"train_{n}"
        shutil.rmtree(out, ignore_errors=True)
        threads = max(1, cores // n) if a.device == "cpu" else 1
        wall, _ = labeler(["train", str(ws), "--out", str(out), "--steps", str(a.steps), "--image-size",
                           str(a.image_size), "--batch-size", str(a.batch), "--no-eval", "--no-register",
                           "--device", a.device, "--threads", str(threads), "--save-every", "1e9"], n)
        log = out / "train_log.jsonl"
        meta = json.loads((out / "model.json").read_text())["metrics"]["train"]
        trajectory = losses(log)
        if base_losses is None:
            base_losses, model_dir = trajectory, out
            gap = "—"
        else:
            rel = [abs(x - y) / abs(y) for x, y in zip(trajectory, base_losses)]
            gap = f"{rel[0]:.1e} / {max(rel):.1e}"
        rows.append((f"train, {a.steps} steps", n, threads, f"{steady_img_s(log):.2f}",
                     f"{a.steps * a.batch / wall:.2f}", f"{wall:.0f}", gap, meta.get("backend") or "—"))
    base_losses = None
    for n in a.nprocs if "follow" in a.only else []:
        run = folder / f"follow_{n}"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(ws, run / "ws")  # it registers its checkpoint: a copy, so no run warm-starts from another
        threads = max(1, cores // n) if a.device == "cpu" else 1
        trace = run / "trace"
        wall, _ = labeler(["train", str(run / "ws"), "--out", str(run / "out"), "--follow", "--steps",
                           str(a.follow_steps), "--every-steps", str(10 ** 9), "--image-size", str(a.image_size),
                           "--batch-size", str(a.batch), "--device", a.device, "--threads", str(threads)], n,
                          {"LABELER_FOLLOW_TRACE": str(trace)})
        log = Path(f"{trace}.rank0.jsonl")
        trajectory = losses(log)
        if base_losses is None:
            base_losses, gap = trajectory, "—"
        else:
            rel = [abs(x - y) / abs(y) for x, y in zip(trajectory, base_losses)]
            gap = f"{rel[0]:.1e} / {max(rel):.1e}"
        rows.append((f"follow, {a.follow_steps} steps", n, threads, f"{steady_img_s(log):.2f}",
                     f"{a.follow_steps * a.batch / wall:.2f}", f"{wall:.0f}", gap,
                     ("nccl" if a.device == "cuda" else "gloo") if n > 1 else "—"))
    with Workspace.open(ws) as w:
        todo = len(w.image_ids(a.project))
    for n in a.nprocs if "predict" in a.only else []:
        copy = folder / f"predict_{n}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(ws, copy)
        threads = max(1, cores // n) if a.device == "cpu" else 1
        wall, _ = labeler(["predict", str(copy), "--project", a.project, "--model", str(model_dir), "--batch", "4",
                           "--threads", str(threads)], n)
        rows.append((f"predict {todo} images", n, threads, "—", f"{todo / wall:.2f}", f"{wall:.0f}", "—",
                     "gloo" if n > 1 else "—"))
    print(f"\n{a.device}, {cores} cores, {a.image_size} px, global batch {a.batch}, {a.images}-image demo workspace\n")
    print("| run | processes | threads each | steady img/s | wall img/s | wall s | loss gap vs 1 process: "
          "step 1 / max | backend |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")


if __name__ == "__main__":
    main()

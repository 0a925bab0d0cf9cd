"""Pre-label worker figures: throughput against the bare forward pass, UI stalls, refine latency.

    .venv/bin/python bench/bench_worker.py [--model DIR] [--images 40] [--json out.json]

1. Throughput: the same demo images through (a) the bare model forward pass on already letterboxed
   tensors and (b) the whole pre-label path of the PredictionService (read + decode the JPEG,
   letterbox, forward, decode boxes, write the predictions table), in one run; overhead = b / a - 1.
2. Event-loop stall: a Qt event loop (offscreen) with a 5 ms timer while the worker runs at full load
   on the images; the longest gap between ticks beyond the timer period is the longest stall.
3. Refine latency: click-to-refine answered from the cached detections, and with a forward pass on a
   crop around the click, through the worker's job queue (as the GUI does it).

Speed does not depend on the weights' values; without --model, the shipped demo model is used, or a
randomly initialised tf_efficientdet_lite0 at 320 px if none is shipped (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def model_dir(arg: str | None, tmp: Path) -> tuple[Path, str]:
    if arg:
        return Path(arg), "given"
    shipped = ROOT / "resources" / "models" / "demo"
    if (shipped / "model.json").exists():
        return shipped, "shipped demo model"
    import torch

    from inference.architectures import Group, build_detector
    from inference.checkpoint import save_checkpoint
    from projects.taxonomy import default_super_taxonomy

    sup = default_super_taxonomy()
    torch.manual_seed(0)
    groups = [Group("all", tuple(sup.names))]
    model = build_detector("single", "tf_efficientdet_lite0", groups, 320)
    meta = {"model": "tf_efficientdet_lite0", "image_size": 320, "layout": "single",
            "groups": [g.to_dict() for g in groups], "super_taxonomy": sup.to_dict(), "approach": "random",
            "normalisation": {"mean": [127.5] * 3, "std": [127.5] * 3}, "data": {}, "metrics": {}}
    save_checkpoint(tmp / "random", model, meta)
    return tmp / "random", "random-init tf_efficientdet_lite0 320 px (speed only)"


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json")
    args = ap.parse_args()

    import torch

    from inference.predictor import Predictor
    from inference.registry import register_checkpoint
    from inference.worker import PredictionService, Priority, default_threads
    from projects.demo import build_demo
    from projects.imaging import read_image

    threads = args.threads or default_threads()
    out: dict = {"machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, "
                            f"cuda={torch.cuda.is_available()}", "threads": threads}
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        mdir, what = model_dir(args.model, tmp)
        out["model"] = what
        ws = build_demo(tmp / "ws", n_images=args.images * 3, seed=11)
        ids = ws.image_ids("B")[: args.images]
        register_checkpoint(ws, mdir)
        paths = [ws.image_path(ws.image(i)["path"]) for i in ids]
        ws.close()

        # (a) bare forward pass on prepared tensors, same images, batch 1 (as the worker runs)
        pred = Predictor.from_checkpoint(mdir, threads=threads)
        batches = [pred.prepare([read_image(p)])[0] for p in paths]
        pred.forward(batches[0])  # warm-up

        def bare_rate() -> float:
            t = time.perf_counter()
            for x in batches:
                pred.forward(x)
            return len(batches) / (time.perf_counter() - t)

        before = bare_rate()  # measured before and after the service run, averaged: fair under drift

        # (b) the whole pre-label path through the service
        done: list[float] = []
        svc = PredictionService(tmp / "ws", threads=threads, on_result=lambda r: done.append(time.perf_counter()))
        svc.start()
        svc.request(ids[0], Priority.BACKGROUND)  # warm-up: loads the model
        svc.wait_idle(600)
        start = time.perf_counter()
        svc.request_many(ids[1:], Priority.BACKGROUND)
        svc.wait_idle(3600)
        full = time.perf_counter() - start
        out["prelabel_images_per_s"] = (len(ids) - 1) / full
        out["bare_forward_images_per_s"] = (before + bare_rate()) / 2
        out["prelabel_overhead"] = out["bare_forward_images_per_s"] / out["prelabel_images_per_s"] - 1

        # 2. event-loop stall under full load, with fresh requests (a new model version: no cache)
        from PySide6.QtCore import QElapsedTimer, QTimer
        from PySide6.QtWidgets import QApplication

        from inference.checkpoint import read_meta

        app = QApplication.instance() or QApplication([])
        ws2 = build_demo(tmp / "ws2", n_images=args.images * 3, seed=12)
        ids2 = ws2.image_ids("B")[: args.images]
        register_checkpoint(ws2, mdir)
        ws2.close()
        svc2 = PredictionService(tmp / "ws2", threads=threads)
        svc2.start()
        svc2.request(ids2[0])
        svc2.wait_idle(600)
        gaps: list[float] = []
        clock = QElapsedTimer()
        clock.start()
        last = [clock.nsecsElapsed()]

        def tick() -> None:
            now = clock.nsecsElapsed()
            gaps.append((now - last[0]) / 1e6)
            last[0] = now
            if svc2.pending() == 0:
                app.quit()

        timer = QTimer()
        timer.setInterval(5)
        timer.timeout.connect(tick)
        svc2.request_many(ids2[1:], Priority.BACKGROUND)
        timer.start()
        app.exec()
        timer.stop()
        svc2.stop()
        out["event_loop_ticks"] = len(gaps)
        out["event_loop_longest_gap_ms"] = max(gaps) if gaps else float("nan")
        out["event_loop_longest_stall_ms"] = max(0.0, out["event_loop_longest_gap_ms"] - 5.0)
        out["event_loop_p99_gap_ms"] = percentile(gaps, 99)

        # 3. refine latency through the job queue
        from inference.refine import click_redetect, from_click

        image = read_image(paths[0])
        dets = pred.predict([image])[0]
        point = ((dets[0].box[0] + dets[0].box[2]) / 2, (dets[0].box[1] + dets[0].box[3]) / 2) if dets else (
            image.shape[1] / 2, image.shape[0] / 2)
        cache_t = []
        for _ in range(200):
            t = time.perf_counter()
            from_click(point, dets)
            cache_t.append((time.perf_counter() - t) * 1e3)
        svc.call(lambda p: None).result(60)
        fwd_t = []
        for _ in range(10):
            t = time.perf_counter()
            svc.call(lambda p: click_redetect(image, point, lambda crop: p.predict([crop])[0])).result(600)
            fwd_t.append((time.perf_counter() - t) * 1e3)
        svc.stop()
        out["refine_from_cache_ms_p50"] = percentile(cache_t, 50)
        out["refine_from_cache_ms_p95"] = percentile(cache_t, 95)
        out["refine_forward_ms_p50"] = percentile(fwd_t, 50)
        out["refine_forward_ms_p95"] = percentile(fwd_t, 95)
        out["model_version"] = read_meta(mdir)["version"]

    for k, v in out.items():
        print(f"{k:36s} {v:.3f}" if isinstance(v, float) else f"{k:36s} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

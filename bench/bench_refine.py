"""Refinement quality: rough boxes (IoU 0.5-0.7 with the truth) and single clicks, per refine path.

    .venv/bin/python bench/bench_refine.py --model resources/models/demo [--bccd-model DIR] \
        [--images 60] [--bccd-images 72] [--json out.json]

For every true box of held-out synthetic scenes (and of the BCCD test split when a BCCD model is given;
GrabCut needs no model and always runs on BCCD), the script makes one rough box by moving each edge
until the IoU with the truth lies in [0.5, 0.7], and one click in the central half of the box, then asks
each refine path for a proposal. It reports, per path: how often the path answers, the median IoU of the
result with the true box (an unanswered case keeps the rough box, or IoU 0 for a click), and the share of
cases at IoU >= 0.9. Refinement is class-agnostic here: box quality, not naming.

The `tight` paths are the same chains with tight boxes on (inference/tighten.py), as the window runs them
then: the cached detections are the pre-labels averaged with their mirrored twins, and a rough box the cache
cannot answer is re-detected on a crop at the training scale instead of the crop grown by half the box.
"ms" is the median time of one refine call (the mirror pass, done once per image by the pre-label worker,
is not in it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from refine_data import DOMAIN_OF, bccd, click_in, perturb, synthetic

from inference.refine import (
    box_redetect,
    box_redetect_at_scale,
    click_redetect,
    from_box,
    from_click,
    grabcut,
    refine_box,
    refine_click,
)
from inference.tighten import CropModel


def iou(a, b) -> float:
    return float(box_iou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))[0, 0])


def evaluate(samples, predictor, rng) -> dict:
    res: dict[str, list[float]] = {k: [] for k in (
        "rough", "box:cache", "box:redetect", "box:grabcut", "box:chain", "box:cache, tight",
        "box:redetect at training scale", "box:chain, tight", "click:cache", "click:redetect", "click:chain",
        "click:chain, tight")}
    answered: dict[str, int] = dict.fromkeys(res, 0)
    ms: dict[str, list[float]] = {k: [] for k in res}
    tight = CropModel.of(predictor) if predictor else None

    def predict(crop):
        return predictor.predict([crop])[0]

    def timed(name, fn, *args, **kw):
        t = time.perf_counter()
        out = fn(*args, **kw)
        ms[name].append(1000 * (time.perf_counter() - t))
        return out

    for s in samples:
        dets = predictor.predict([s.image])[0] if predictor else []
        tight_dets = predictor.tighten([s.image], [dets])[0] if predictor else []  # what the worker stores
        for _, truth in s.boxes:
            rough, r_iou = perturb(truth, rng, shape=s.image.shape)
            if rough is None:
                continue
            res["rough"].append(r_iou)
            img = s.image
            proposals = {"box:grabcut": timed("box:grabcut", grabcut, img, rough)}
            if predictor:
                proposals |= {
                    "box:cache": from_box(rough, dets),
                    "box:redetect": timed("box:redetect", box_redetect, img, rough, predict),
                    "box:chain": timed("box:chain", refine_box, img, rough, dets, predict),
                    "box:cache, tight": from_box(rough, tight_dets),
                    "box:redetect at training scale": timed("box:redetect at training scale", box_redetect_at_scale,
                                                            img, rough, tight),
                    "box:chain, tight": timed("box:chain, tight", refine_box, img, rough, tight_dets, predict,
                                              tight=tight)}
            for name, p in proposals.items():
                answered[name] += p is not None
                res[name].append(iou(p.box, truth) if p else r_iou)
            if predictor:
                point = click_in(truth, rng)
                cached = from_click(point, dets)
                redet = timed("click:redetect", click_redetect, img, point, predict)
                chain = cached or redet
                chain_tight = timed("click:chain, tight", refine_click, img, point, tight_dets, predict)
                for name, p in (("click:cache", cached), ("click:redetect", redet), ("click:chain", chain),
                                ("click:chain, tight", chain_tight)):
                    answered[name] += p is not None
                    res[name].append(iou(p.box, truth) if p else 0.0)
    out = {}
    for name, xs in res.items():
        if not xs:
            continue
        a = np.array(xs)
        out[name] = {"n": len(a), "answered": (answered[name] / len(a)) if name != "rough" else 1.0,
                     "median_iou": float(np.median(a)), "share_iou_ge_0.9": float((a >= 0.9).mean()),
                     "ms": float(np.median(ms[name])) if ms[name] else None}
    return out


def table(title: str, rows: dict) -> str:
    lines = [f"### {title}", "", "| path | cases | answered | median IoU | IoU ≥ 0.9 | ms |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        t = f"{r['ms']:.0f}" if r.get("ms") is not None else "—"
        lines.append(f"| {name} | {r['n']} | {r['answered']:.0%} | {r['median_iou']:.3f} "
                     f"| {r['share_iou_ge_0.9']:.0%} | {t} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description="refinement quality per path")
    ap.add_argument("--model", default="resources/models/demo")
    ap.add_argument("--bccd-model")
    ap.add_argument("--images", type=int, default=60, help="held-out synthetic scenes (split over 3 domains)")
    ap.add_argument("--bccd-images", type=int, default=72)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    from inference.predictor import Predictor

    rng = np.random.default_rng(0)
    report = {}
    pred = Predictor.from_checkpoint(args.model, threads=args.threads)
    samples = [s for d in DOMAIN_OF.values() for s, _ in synthetic(args.images // 3, d)]
    report["synthetic"] = evaluate(samples, pred, rng)
    print(table(f"Synthetic held-out scenes ({len(samples)} images, model {pred.version})", report["synthetic"]))
    bpred = Predictor.from_checkpoint(args.bccd_model, threads=args.threads) if args.bccd_model else None
    bs = list(bccd("test", args.bccd_images))
    report["bccd"] = evaluate(bs, bpred, rng)
    print()
    name = bpred.version if bpred else "none: GrabCut only"
    print(table(f"BCCD held-out test bucket ({len(bs)} images, model {name})", report["bccd"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

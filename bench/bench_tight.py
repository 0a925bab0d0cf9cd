"""Tight boxes, measured: how close the pre-labels' boxes are to the truth with each pass tried, in one run.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_tight.py [--model resources/models/demo] \
        [--images 60] [--bccd-model DIR] [--bccd-images 41] [--only NAME ...] [--json out.json]

Data: held-out synthetic scenes (seeds the demo never uses, a third per domain) with the demo model, and the
BCCD images of Labeler's held-out test split with a BCCD model (`--bccd-model`). Every variant starts from
the same whole-image detections (the predictor's, hierarchical decoding, down to 0.05) and changes boxes only:

- `today`: the boxes as predicted;
- `mirror average` (inference/tighten.py, what tight boxes do): one more forward pass on the mirrored image, each
  detection averaged, weighted by score, with the same node's best-overlapping mirrored box (IoU >= 0.7);
- `crop at training scale, t=T`: each detection scoring >= 0.25 re-detected on a square window around its box
  resampled so the box's longer side is T of the model's input, the same node's best-overlapping detection
  (IoU >= 0.5) taking its place;
- `edge snap`: each side of a detection scoring >= 0.25 moved, within 5 % of the box's longer side, to the pixel
  boundary with the strongest mean colour step along the middle 80 % of that side;
- `mirror average + edge snap`.

Scoring is pycocotools through `inference.evaluate.coco_evaluate`, per top-level node (synthetic; nodes with a
positive in the model's training data) or per BCCD class, after NMS per label at 0.5 as pre-labels are shown.
Localisation: over the true boxes matched at IoU 0.5 by a detection scoring >= 0.3, the share at IoU >= 0.9 and
>= 0.95 and the median IoU. ms/img: the variant's own time per image on top of the whole-image prediction
(median image). Prints Markdown tables; never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from refine_data import DOMAIN_OF, bccd, synthetic  # noqa: E402
from torchvision.ops import batched_nms  # noqa: E402

from inference.decoding import parent_map, trained_nodes  # noqa: E402
from inference.evaluate import coco_evaluate  # noqa: E402
from inference.predictor import Predictor  # noqa: E402
from inference.tighten import best_same, redetect, tighten  # noqa: E402

MIN_SCORE = 0.25
Variant = Callable[[Predictor, np.ndarray, list[Any]], list[Any]]


def crop_pass(target: float) -> Variant:
    def run(pred: Predictor, image: np.ndarray, dets: list[Any]) -> list[Any]:
        h, w = image.shape[:2]
        todo = [i for i, d in enumerate(dets) if d.score >= MIN_SCORE]
        out = list(dets)
        for k in range(0, len(todo), 4):  # four crops per forward pass
            chunk = todo[k:k + 4]
            found = redetect(image, [dets[i].box for i in chunk], pred.predict, pred.image_size, target, pred.mean)
            for i, f in zip(chunk, found):
                m = best_same(dets[i].box, dets[i].node, f, 0.5)
                if m is not None:
                    b = m[0]
                    out[i] = replace(dets[i], box=(max(0.0, b[0]), max(0.0, b[1]), min(w, b[2]), min(h, b[3])))
        return out
    return run


def snap_box(image: np.ndarray, box: Sequence[float], reach: float = 0.05, span: float = 0.1) -> tuple:
    """Each side moved to the pixel boundary, within `reach` of the longer side, with the strongest mean colour
    step along the middle of that side."""
    H, W = image.shape[:2]
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    r = max(2, int(round(reach * max(w, h))))
    X0, Y0 = max(0, int(np.floor(x1)) - r - 2), max(0, int(np.floor(y1)) - r - 2)
    X1, Y1 = min(W, int(np.ceil(x2)) + r + 2), min(H, int(np.ceil(y2)) + r + 2)
    reg = image[Y0:Y1, X0:X1].astype(np.float32)
    if reg.shape[0] < 3 or reg.shape[1] < 3:
        return tuple(box)
    dx = np.abs(np.diff(reg, axis=1)).sum(2)  # dx[:, j]: the step across the boundary at column X0 + j + 1
    dy = np.abs(np.diff(reg, axis=0)).sum(2)
    rows = slice(max(0, int(y1 + span * h) - Y0), max(1, int(y2 - span * h) - Y0))
    cols = slice(max(0, int(x1 + span * w) - X0), max(1, int(x2 - span * w) - X0))

    def best(edge: float, support: Callable[[int], float | None]) -> float:
        c = int(round(edge))
        scored = [(support(b), b) for b in range(c - r, c + r + 1)]
        scored = [(s, b) for s, b in scored if s is not None]
        return float(max(scored)[1]) if scored else edge

    def col(b: int) -> float | None:
        j = b - X0 - 1
        return float(dx[rows, j].mean()) if 0 <= j < dx.shape[1] and dx[rows, j].size else None

    def row(b: int) -> float | None:
        i = b - Y0 - 1
        return float(dy[i, cols].mean()) if 0 <= i < dy.shape[0] and dy[i, cols].size else None

    out = (best(x1, col), best(y1, row), best(x2, col), best(y2, row))
    return out if out[2] - out[0] >= 2 and out[3] - out[1] >= 2 else tuple(box)


def snap(pred: Predictor, image: np.ndarray, dets: list[Any]) -> list[Any]:
    return [replace(d, box=snap_box(image, d.box)) if d.score >= MIN_SCORE else d for d in dets]


def mirror(pred: Predictor, image: np.ndarray, dets: list[Any]) -> list[Any]:
    return tighten([image], [dets], pred.predict)[0]


VARIANTS: dict[str, Variant] = {
    "today": lambda pred, image, dets: dets,
    "mirror average": mirror,
    "crop at training scale, t=0.15": crop_pass(0.15),
    "crop at training scale, t=0.25": crop_pass(0.25),
    "crop at training scale, t=0.4": crop_pass(0.4),
    "edge snap": snap,
    "mirror average + edge snap": lambda pred, image, dets: snap(pred, image, mirror(pred, image, dets)),
}


def run_dataset(title: str, samples, pred: Predictor, category_of: Callable[[str], str | None],
                variants: dict[str, Variant]) -> dict[str, dict[str, float]]:
    cats = sorted({c for s in samples for n, _ in s.boxes if (c := category_of(n)) is not None})
    cid = {c: k + 1 for k, c in enumerate(cats)}
    gt = {"images": [{"id": k + 1, "width": s.image.shape[1], "height": s.image.shape[0]}
                     for k, s in enumerate(samples)],
          "categories": [{"id": cid[c], "name": c} for c in cats], "annotations": []}
    for k, s in enumerate(samples):
        for n, (x1, y1, x2, y2) in s.boxes:
            if category_of(n) in cid:
                gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": k + 1,
                                          "category_id": cid[category_of(n)], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                          "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    base, base_ms = [], []
    for s in samples:
        t = time.perf_counter()
        base.append(pred.predict([s.image])[0])
        base_ms.append(1000 * (time.perf_counter() - t))
    print(f"\n### {title}\n\n{len(samples)} images, {len(gt['annotations'])} true boxes, model {pred.version}; "
          f"whole-image prediction {np.median(base_ms):.0f} ms/img\n")
    print("| variant | + ms/img | mAP@0.5 | mAP@[.5:.95] | recall@0.3 | matched | IoU ≥ 0.9 | IoU ≥ 0.95 "
          "| median IoU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    out = {}
    for name, fn in variants.items():
        dets, ms = [], []
        for s, d in zip(samples, base):
            t = time.perf_counter()
            dets.append(fn(pred, s.image, d))
            ms.append(1000 * (time.perf_counter() - t))
        results = []
        for k, ds in enumerate(dets):
            mapped = [(cid[c], d.box, d.score) for d in ds if (c := category_of(d.node)) in cid]
            if not mapped:
                continue
            keep = batched_nms(torch.tensor([m[1] for m in mapped], dtype=torch.float32),
                               torch.tensor([m[2] for m in mapped]), torch.tensor([m[0] for m in mapped]), 0.5)
            for i in keep.tolist():
                c, (x1, y1, x2, y2), score = mapped[i]
                results.append({"image_id": k + 1, "category_id": c, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "score": score})
        r = coco_evaluate(gt, results, score_threshold=0.3)
        loc = r.localisation
        out[name] = {"ms_per_image": float(np.median(ms)), "mAP50": r.map50, "mAP": r.map, "recall": r.recall, **loc}
        print(f"| {name} | {np.median(ms):.0f} | {100 * r.map50:.1f} | {100 * r.map:.1f} | {100 * r.recall:.1f} | "
              f"{loc['matched']} | {100 * loc['iou>=0.9']:.1f} | {100 * loc['iou>=0.95']:.1f} | "
              f"{loc['median_iou']:.3f} |", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "resources/models/demo"))
    ap.add_argument("--images", type=int, default=60, help="held-out synthetic scenes (a third per domain)")
    ap.add_argument("--bccd-model")
    ap.add_argument("--bccd-images", type=int, default=41)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="variant names (today always runs)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    variants = {k: v for k, v in VARIANTS.items() if not args.only or k in args.only or k == "today"}
    report = {}
    pred = Predictor.from_checkpoint(args.model, threads=args.threads)
    parents, trained = parent_map(pred.checkpoint.meta), trained_nodes(pred.checkpoint.meta)

    def root(n: str) -> str | None:
        while parents.get(n):
            n = parents[n]
        return n if trained is None or n in trained else None

    samples = [s for d in DOMAIN_OF.values() for s, _ in synthetic(args.images // 3, d)]
    report["synthetic"] = run_dataset("Synthetic held-out scenes (demo model)", samples, pred, root, variants)
    if args.bccd_model:
        bpred = Predictor.from_checkpoint(args.bccd_model, threads=args.threads)
        nodes = set(bpred.node_names)
        report["bccd"] = run_dataset("BCCD held-out test split", list(bccd("test", args.bccd_images)), bpred,
                                     lambda n: n.lower() if n.lower() in nodes else None, variants)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

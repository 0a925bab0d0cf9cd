"""Hierarchical decoding, measured: the same checkpoint decoded with and without it, in one run.

What a customer who labels coarse classes sees: every detection is mapped up to its top-level node
(car -> vehicle, pedestrian_child -> person), as the pre-labels of a `Vehicle`/`Human` customer are, and
reduced by NMS per label after the mapping (as pre-labels are shown), and scored with pycocotools against
the full ground truth at that level (the demo's ground_truth.json, test
split). Two models:

- `shipped`: the demo model as trained (customer B labels the fine vehicle and person nodes);
- `coarse-only`: the same model with the class columns of the nodes that only B labels reset to effdet's
  initialisation (prior 0.01), and a data snapshot saying they have no positive: what Taxonomy Loss Masking
  leaves in a model trained on coarse customers alone (a column masked on every image gets no gradient, so
  its last-layer weights stay at their initial values). This is the defect found on real photos.

    .venv/bin/python bench/bench_decoding.py WS [--model resources/models/demo] [--split test]
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torchvision.ops import batched_nms

from inference.checkpoint import load_checkpoint
from inference.evaluate import _read_json, coco_evaluate
from inference.predictor import Predictor
from projects.demo import GROUND_TRUTH
from projects.imaging import read_image
from projects.split import split_of
from projects.workspace import Workspace

FINE_ONLY_B = ("car", "truck", "bus", "motorcycle", "pedestrian_adult", "pedestrian_child", "traffic_light")


def coarse_only(checkpoint):
    """A copy whose columns for FINE_ONLY_B are back at effdet's initial values (weights N(0, 0.01), bias prior)."""
    ck = copy.deepcopy(checkpoint)
    names = ck.node_names
    head = ck.model.net.class_net.predict
    c = len(names)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w = head.conv_pw.weight.view(-1, c, *head.conv_pw.weight.shape[1:])  # [A, C, in, 1, 1]
        b = head.conv_pw.bias.view(-1, c)
        for n in FINE_ONLY_B:
            k = names.index(n)
            w[:, k] = torch.randn(w[:, k].shape, generator=g) * 0.01
            b[:, k] = -math.log((1 - 0.01) / 0.01)
    ck.meta = dict(ck.meta)
    data = dict(ck.meta.get("data") or {})
    data["node_positives"] = {n: (0 if n in FINE_ONLY_B or n in ("cyclist", "traffic_sign") else 1) for n in names}
    ck.meta["data"] = data
    return ck


def top(sup, node: str) -> str:
    return sup.path_to_root(node)[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ws", type=Path)
    ap.add_argument("--model", type=Path, default=Path(__file__).resolve().parents[1] / "resources/models/demo")
    ap.add_argument("--split", default="test")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    truth = _read_json(args.ws / GROUND_TRUTH)["images"]
    with Workspace.open(args.ws) as ws:
        sup = ws.super_taxonomy()
        rows = [ws.image(i) for p in ws.project_names() for i in ws.image_ids(p)]
        rows = [r for r in rows if split_of(int(r["split_bucket"])) == args.split and r["path"] in truth]
        images = [read_image(ws.image_path(r["path"])) for r in rows]
    coarse = ["vehicle", "person"]
    cat = {n: k + 1 for k, n in enumerate(coarse)}
    gt = {"images": [{"id": k + 1, "width": int(r["width"]), "height": int(r["height"])} for k, r in enumerate(rows)],
          "categories": [{"id": cat[n], "name": n} for n in coarse], "annotations": []}
    for k, r in enumerate(rows):
        for o in truth[r["path"]]:
            t = top(sup, o["node"])
            if t in cat:
                x1, y1, x2, y2 = o["box"]
                gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": k + 1, "category_id": cat[t],
                                          "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                          "iscrowd": 0})
    base = load_checkpoint(args.model, sup)
    print(f"{len(rows)} {args.split} images of {args.ws}, {len(gt['annotations'])} vehicles and people; "
          f"model {args.model}\n")
    print("| model | decoding | mAP@0.5 | mAP@[.5:.95] | recall@0.3 | R@P90 vehicle | R@P90 person | "
          "IoU>=0.9 | median IoU | detections of nodes without positives |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, ck in (("shipped", base), ("coarse-only", coarse_only(base))):
        for hierarchical in (False, True):
            pred = Predictor(ck, device="cpu", min_score=0.05, hierarchical=hierarchical)
            untrained = [n for n, on in zip(pred.decodings[0].nodes, pred.decodings[0].enabled.tolist()) if not on] \
                if hierarchical else [n for n, k in (ck.meta["data"].get("node_positives") or {}).items() if not k]
            dets, n_untrained, n_all = [], 0, 0
            for k in range(0, len(images), 4):
                for j, ds in enumerate(pred.predict(images[k:k + 4])):
                    n_all += len(ds)
                    n_untrained += sum(d.node in untrained for d in ds)
                    mapped = [(cat[top(sup, d.node)], d.box, d.score) for d in ds if top(sup, d.node) in cat]
                    if not mapped:
                        continue
                    # NMS per label after the mapping, as pre-labels are shown (inference/prelabels.py, IoU 0.5)
                    boxes = torch.tensor([m[1] for m in mapped], dtype=torch.float32)
                    scores = torch.tensor([m[2] for m in mapped], dtype=torch.float32)
                    keep = batched_nms(boxes, scores, torch.tensor([m[0] for m in mapped]), 0.5)
                    for i in keep.tolist():
                        c, (x1, y1, x2, y2), score = mapped[i]
                        dets.append({"image_id": k + j + 1, "category_id": c, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                     "score": score})
            r = coco_evaluate(gt, dets, score_threshold=0.3)
            loc, per = r.localisation, r.per_category
            print(f"| {label} | {'hierarchical' if hierarchical else 'raw columns'} | {100 * r.map50:.1f} | "
                  f"{100 * r.map:.1f} | {100 * r.recall:.1f} | {100 * per['vehicle']['recall_at_p90']:.1f} | "
                  f"{100 * per['person']['recall_at_p90']:.1f} | {100 * loc['iou>=0.9']:.1f} | "
                  f"{loc['median_iou']:.3f} | {n_untrained} of {n_all} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Drift by cohort with real models: is the shifted cohort flagged, and no unshifted one?

    nice -n 10 .venv/bin/python bench/bench_drift.py --out /tmp/bench_drift [--bccd-steps 300]

Two streams, each arriving in import runs (`labeler drift --by import`), scored on every image (`--split
all`: the models never saw these images):

1. **Synthetic**: the shipped demo model (trained on day, night and fog scenes of the three demo customers)
   and customer B's taxonomy (people by age, vehicles by kind, traffic lights). Runs: night, night, night
   (the model knows night: unshifted), then **far**: a wide-angle camera whose objects are half the size it
   learned (the shift that hurts: to be flagged). `--snow` makes the third run **snow** instead (bright,
   washed out, noisy: a milder shift).
2. **BCCD** (../shared/data/BCCD): a model trained here for `--bccd-steps` steps (batch 8, 256 px) on 180 of
   the 364 images (customer `All`: red cells, white cells, platelets); the other 184 arrive in four runs of
   46, the last one **zoomed out** as a lower-magnification objective would show it (cells at 55 % of their
   size, the frame filled with the slide's background). A hue or stain change is no shift for this model:
   its training augmentation permutes and jitters the colour channels.

Prints, per cohort: images, boxes, mAP50, recall at the display threshold, the change against the oldest
cohort with its interval and p-value, and the flags; then whether exactly the shifted cohort was flagged.
Figures go to OUT/results.json. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tlm_data import BCCD_DEFAULT, BCCD_NODES, read_voc
from inference.drift import drift_report
from inference.predictor import Predictor
from inference.train import TrainConfig, train
from projects.imaging import ImageInfo, read_image, write_image
from projects.synthetic import Domain, customer_view, make_scene
from projects.taxonomy import CustomerTaxonomy, Label, Node, SuperTaxonomy, resource_path
from projects.workspace import Workspace

SNOW = Domain("snow", sky=(238, 238, 242), road=(214, 214, 220), light=1.25, fog=0.35, noise=9.0)
FAR = Domain("far", sky=(150, 190, 235), road=(105, 105, 110), scale=0.5)  # a wide-angle camera: objects half size


def add_run(ws: Workspace, project: str, items: list[tuple[Path, list[tuple[str, tuple]]]]) -> None:
    """One import run: the images in one insert (one import time), each submitted with its boxes."""
    labels = {lab["node"]: lab["id"] for lab in ws.labels(project)}
    infos = [ImageInfo(p, hashlib.sha256(p.read_bytes()).hexdigest(), *read_image(p).shape[1::-1])
             for p, _ in items]
    ids = ws.insert_images(ws.project_id(project), infos).added
    with ws.transaction():
        for image_id, (_, boxes) in zip(ids, items):
            for node, box in boxes:
                ws.add_annotation(image_id, labels[node], box, provenance="imported", author="bench")
            ws.set_status(image_id, "submitted")
    time.sleep(0.01)


def synthetic_stream(folder: Path, per_run: int, snow: bool = False) -> tuple[Workspace, int]:
    ws = Workspace.create(folder)
    ws.add_project("B", CustomerTaxonomy.load(resource_path("taxonomies", "B.yaml")))
    view = ws.project_view("B")
    runs = ["night", "night", "night", FAR] if not snow else ["night", "night", SNOW, FAR]
    for k, domain in enumerate(runs):
        items = []
        for j in range(per_run):
            seed = 500_000 + 1000 * k + j  # seeds the demo model never saw
            scene = make_scene(seed, domain)
            path = folder / "images" / f"run{k}_{j:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_image(path, scene.image)
            items.append((path, [(cb.node, cb.box) for cb in customer_view(scene, view)]))
        add_run(ws, "B", items)
    return ws, len(runs) - 1


def zoom_out(img: np.ndarray, boxes: list[tuple[str, tuple]], scale: float = 0.55
             ) -> tuple[np.ndarray, list[tuple[str, tuple]]]:
    """The slide under a lower-magnification objective: the image shrunk to `scale`, centred on a frame of
    the original size filled with its median colour; the boxes follow."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    out = np.empty_like(img)
    out[:] = np.median(img.reshape(-1, 3), axis=0).astype(np.uint8)
    x0, y0 = (w - small.shape[1]) // 2, (h - small.shape[0]) // 2
    out[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return out, [(n, (x0 + b[0] * scale, y0 + b[1] * scale, x0 + b[2] * scale, y0 + b[3] * scale)) for n, b in boxes]


def bccd_model(folder: Path, files: list[Path], img_dir: Path, steps: int) -> Path:
    sup = SuperTaxonomy([Node(n) for n in BCCD_NODES.values()], name="blood")
    ws = Workspace.create(folder / "train_ws", sup)
    ws.add_project("All", CustomerTaxonomy([Label(n, n) for n in BCCD_NODES.values()], name="All"))
    add_run(ws, "All", [(img_dir / v.filename, [(BCCD_NODES[o.name], o.box) for o in v.objects])
                        for v in map(read_voc, files)])
    out = folder / "bccd_model"
    cfg = TrainConfig(approach="tlm", image_size=256, steps=steps, batch_size=8, evaluate=False, register=False)
    t = time.perf_counter()
    train(ws, out, cfg)
    print(f"BCCD model: {steps} steps of 8 images, {time.perf_counter() - t:.0f} s", flush=True)
    ws.close()
    return out


def bccd_stream(folder: Path, files: list[Path], img_dir: Path) -> tuple[Workspace, int]:
    sup = SuperTaxonomy([Node(n) for n in BCCD_NODES.values()], name="blood")
    ws = Workspace.create(folder / "drift_ws", sup)
    ws.add_project("All", CustomerTaxonomy([Label(n, n) for n in BCCD_NODES.values()], name="All"))
    runs = [files[k::4] for k in range(4)]
    for k, run in enumerate(runs):
        items = []
        for xml in run:
            voc = read_voc(xml)
            path = folder / "drift_ws" / "images" / f"run{k}_{voc.filename}"
            path.parent.mkdir(parents=True, exist_ok=True)
            img = read_image(img_dir / voc.filename)
            boxes = [(BCCD_NODES[o.name], o.box) for o in voc.objects]
            if k == 3:
                img, boxes = zoom_out(img, boxes)
            write_image(path, img)
            items.append((path, boxes))
        add_run(ws, "All", items)
    return ws, 3


def show(name: str, report, shifted: int) -> dict:
    print(f"\n{name}: model {report.model}, {report.metric} flagged at a drop >= {report.threshold}")
    print(f"  {'cohort':<8} {'images':>6} {'boxes':>6} {'mAP50':>6} {'recall@' + str(report.score_threshold):>10} "
          f"{'change [interval]':>26} {'p':>7}  flags")
    for k, c in enumerate(report.cohorts):
        f = c.figures
        change = "baseline" if k == 0 else (f"{f.change:+.3f} [{f.change_low:+.3f}, {f.change_high:+.3f}]"
                                           if f.change_low is not None else f"{f.change:+.3f}")
        p = "" if f.p_value is None else f"{f.p_value:.4f}"
        print(f"  run {k + 1:<4} {f.images:>6} {f.gt:>6} {f.mAP50:>6.3f} {f.recall:>10.3f} {change:>26} {p:>7}  "
              f"{', '.join(c.flags) or '-'}")
    flagged = [k for k, c in enumerate(report.cohorts) if c.flags]
    ok = flagged == [shifted]
    print(f"  flagged runs: {[k + 1 for k in flagged]}; shifted run: {shifted + 1} -> "
          f"{'the shifted run and no other' if ok else 'NOT as expected'}")
    return {"report": report.to_dict(), "flagged": flagged, "shifted": shifted, "as_expected": ok}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-run", type=int, default=60, help="synthetic images per import run")
    ap.add_argument("--bccd", type=Path, default=BCCD_DEFAULT)
    ap.add_argument("--bccd-steps", type=int, default=300, help="training steps of the BCCD model (0: skip BCCD)")
    ap.add_argument("--bccd-model", type=Path, help="reuse a BCCD model trained by an earlier run")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--snow", action="store_true", help="the third synthetic run in snow (a milder shift)")
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    torch.set_num_threads(1)  # on a loaded 2-core box one thread steps faster (docs/training.md)
    results = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                          f"{'cuda' if torch.cuda.is_available() else 'cpu'}", "streams": {}}
    t = time.perf_counter()
    ws, shifted = synthetic_stream(args.out / "synthetic", args.per_run, args.snow)
    predictor = Predictor.from_checkpoint(resource_path("models", "demo"), super_taxonomy=ws.super_taxonomy())
    report = drift_report(ws, predictor, by="import", splits=("train", "val", "test"), bootstrap=args.bootstrap)
    third = "snow" if args.snow else "night"
    results["streams"]["synthetic"] = {**show(f"synthetic (demo model; night, night, {third}, far)", report, shifted),
                                       "seconds": round(time.perf_counter() - t, 1)}
    ws.close()
    if args.bccd_steps > 0 or args.bccd_model:
        files = sorted((args.bccd / "BCCD" / "Annotations").glob("*.xml"))
        img_dir = args.bccd / "BCCD" / "JPEGImages"
        ordered = sorted(files, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())  # a fixed shuffle
        model = args.bccd_model or bccd_model(args.out, ordered[:180], img_dir, args.bccd_steps)
        t = time.perf_counter()
        ws, shifted = bccd_stream(args.out, ordered[180:], img_dir)
        predictor = Predictor.from_checkpoint(model, super_taxonomy=ws.super_taxonomy())
        report = drift_report(ws, predictor, by="import", splits=("train", "val", "test"), bootstrap=args.bootstrap)
        results["streams"]["bccd"] = {**show("BCCD (4 runs of 46; the 4th zoomed out)", report, shifted),
                                      "seconds": round(time.perf_counter() - t, 1), "model": str(model)}
        ws.close()
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()

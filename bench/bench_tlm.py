"""The comparison: Taxonomy Loss Masking against naive merging, per-project heads, per-class models and
an oracle, each trained with the same wall-clock budget, scored on a fully labelled held-out test split.

    nice .venv/bin/python bench/bench_tlm.py --out /tmp/bench_tlm --minutes 6

Datasets: the synthetic three-customer workspace (A: people only, B: fine classes, C: vehicles only)
and BCCD split across three simulated customers (R: red cells; WP: white cells and platelets; All:
all three under other names). Rows are appended to `OUT/results.json` after every run, so a cut run
still yields its finished rows; `--table` prints the Markdown table from that file.

Figures per row: mAP@0.5 and mAP@[.5:.95] over the nodes some customer labels; mAP@0.5 and recall at
score 0.3 on the *partially labelled* nodes (labelled by some customers, missing for others); training
seconds, steps and images seen; inference cost per image (letterbox + forward + decode at batch 1, and
the bare forward pass alone), median over the test images.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tlm_data import BCCD_DEFAULT, build_bccd, build_oracle_synthetic, build_synthetic
from inference.evaluate import evaluate_ground_truth
from inference.predictor import Predictor
from inference.train import TrainConfig, train
from projects.demo import GROUND_TRUTH
from projects.imaging import read_image
from projects.split import split_of
from projects.workspace import Workspace

RUNS = {"synthetic": ["tlm", "naive", "oracle", "heads", "per-class"],
        "bccd": ["tlm", "naive", "heads", "per-class", "oracle"]}


def partial_nodes(ws: Workspace) -> tuple[list[str], list[str]]:
    """(nodes some project labels, those among them that some other project misses)."""
    sup = ws.super_taxonomy()
    labeled = [ws.project_view(p).labeled_nodes for p in ws.project_names()]
    some = [n for n in sup.names if any(n in s for s in labeled)]
    return some, [n for n in some if not all(n in s for s in labeled)]


def missing_recall(ev, labeled: dict[str, set[str]], nodes: list[str]) -> dict:
    """Recall at the score threshold on the objects the image's own customer does not label (pooled over
    (project, node) pairs): what naive merging teaches the model to ignore."""
    found = total = 0.0
    per_node: dict[str, list[float]] = {}
    for p, r in ev.per_project.items():
        for n in nodes:
            if n in labeled[p]:
                continue
            row = r["per_node"].get(n)
            if not row or not row["gt"]:
                continue
            found += row["recall"] * row["gt"]
            total += row["gt"]
            acc = per_node.setdefault(n, [0.0, 0.0])
            acc[0] += row["recall"] * row["gt"]
            acc[1] += row["gt"]
    return {"missing_recall": found / total if total else float("nan"), "missing_gt": int(total),
            "missing_recall_per_node": {n: f / t for n, (f, t) in per_node.items()}}


def test_images(ws: Workspace, limit: int) -> list:
    out = []
    for p in ws.project_names():
        for i in ws.image_ids(p):
            row = ws.image(i)
            if split_of(row["split_bucket"]) == "test":
                out.append(ws.image_path(row["path"]))
    return out[:limit]


def inference_cost(predictor: Predictor, paths: list, repeats: int = 1) -> dict[str, float]:
    images = [read_image(p) for p in paths]
    predictor.predict(images[:1])  # warm-up
    per_image = []
    for img in images:
        t = time.perf_counter()
        predictor.predict([img])
        per_image.append(time.perf_counter() - t)
    return {"predict_ms": 1000 * statistics.median(per_image),
            "forward_ms": 1000 * predictor.time_forward(batch_size=1, repeats=5)}


def forward_gflops(predictor: Predictor) -> float:
    """FLOPs of one bare forward pass at batch 1 (torch's counter): the inference cost no other job on
    the machine can skew, unlike the milliseconds."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, predictor.image_size, predictor.image_size)
    with FlopCounterMode(display=False) as counter:
        predictor.forward(x)
    return counter.get_total_flops() / 1e9


def build(dataset: str, root: Path, args) -> tuple[Path, Path]:
    """(partially labelled workspace, oracle workspace) folders, built once and reused."""
    part, oracle = root / f"{dataset}_ws", root / f"{dataset}_oracle_ws"
    if not Workspace.db_path(part).exists():
        shutil.rmtree(part, ignore_errors=True)
        if dataset == "synthetic":
            build_synthetic(part, args.synthetic_images, args.seed).close()
        else:
            build_bccd(part, args.bccd).close()
    if not Workspace.db_path(oracle).exists():
        shutil.rmtree(oracle, ignore_errors=True)
        if dataset == "synthetic":
            build_oracle_synthetic(part, oracle).close()
        else:
            build_bccd(oracle, args.bccd, oracle=True).close()
    return part, oracle


def run_one(dataset: str, run: str, part: Path, oracle: Path, args, out: Path) -> dict:
    ws_folder = oracle if run == "oracle" else part
    size = args.image_size if dataset == "synthetic" else args.bccd_image_size
    ckpt = out / f"{dataset}_{run}"
    shutil.rmtree(ckpt, ignore_errors=True)
    with Workspace.open(part) as pws:
        nodes, partial = partial_nodes(pws)
        labeled = {p: set(pws.project_view(p).labeled_nodes) for p in pws.project_names()}
    with Workspace.open(ws_folder) as ws:
        t0 = time.perf_counter()
        budget = {"steps": args.steps} if args.steps else {"minutes": args.minutes}
        cfg = TrainConfig(approach="tlm" if run == "oracle" else run, image_size=size, **budget,
                          batch_size=args.batch_size, seed=args.seed, evaluate=False, register=False,
                          progress=args.progress)
        result = train(ws, ckpt, cfg)
        wall = time.perf_counter() - t0
        predictor = Predictor.from_checkpoint(ckpt, device="cpu")
        ev = evaluate_ground_truth(ws, predictor, ws.folder / GROUND_TRUTH, split="test", nodes=nodes,
                                   per_project=True)
        cost = inference_cost(predictor, test_images(ws, args.cost_images))
        cost["gflops"] = forward_gflops(predictor)
        cost["params_m"] = sum(p.numel() for p in predictor.model.parameters()) / 1e6
    sub = ev.subset(partial)
    t = result.metrics["train"]
    return {"dataset": dataset, "approach": run, "image_size": size, "budget": budget,
            "mAP50": ev.map50, "mAP": ev.map, "partial_mAP50": sub["mAP50"], "partial_recall": sub["recall"],
            "recall": ev.recall, "score_threshold": ev.score_threshold, "test_images": ev.images,
            "test_boxes": ev.gt_boxes, "partial_nodes": partial, "nodes": nodes,
            "train_seconds": t["seconds"], "train_wall_seconds": round(wall, 1), "steps": t["steps"],
            "images_seen": t["images_seen"], "images_per_s": t["images_per_s"], **cost,
            "per_node": ev.per_category, **missing_recall(ev, labeled, nodes)}


def reevaluate(row: dict, out: Path) -> dict:
    """Add the per-project figures to a row recorded before they existed (from its saved checkpoint)."""
    part, oracle = out / f"{row['dataset']}_ws", out / f"{row['dataset']}_oracle_ws"
    with Workspace.open(part) as pws:
        labeled = {p: set(pws.project_view(p).labeled_nodes) for p in pws.project_names()}
    with Workspace.open(oracle if row["approach"] == "oracle" else part) as ws:
        predictor = Predictor.from_checkpoint(out / f"{row['dataset']}_{row['approach']}", device="cpu")
        ev = evaluate_ground_truth(ws, predictor, ws.folder / GROUND_TRUTH, split="test", nodes=row["nodes"],
                                   per_project=True)
    assert abs(ev.map50 - row["mAP50"]) < 1e-9, "the checkpoint is not the one this row was measured on"
    params = sum(p.numel() for p in predictor.model.parameters()) / 1e6
    return {**row, **missing_recall(ev, labeled, row["nodes"]), "gflops": forward_gflops(predictor),
            "params_m": params}


def fmt(v: float, pct: bool = True) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:.1f}" if pct else f"{v:.0f}"


def table(rows: list[dict]) -> str:
    lines = ["| data | approach | mAP@0.5 | mAP@[.5:.95] | mAP@0.5 partial | recall@0.3 partial | "
             "recall@0.3 where the customer does not label | train s (steps, images) | GFLOPs/img | params M | "
             "predict ms/img | forward ms/img |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['approach']} | {fmt(r['mAP50'])} | {fmt(r['mAP'])} | "
                     f"{fmt(r['partial_mAP50'])} | {fmt(r['partial_recall'])} | {fmt(r.get('missing_recall'))} | "
                     f"{r['train_seconds']:.0f} ({r['steps']}, {r['images_seen']}) | "
                     f"{r.get('gflops', math.nan):.1f} | {r.get('params_m', math.nan):.1f} | {r['predict_ms']:.0f} | "
                     f"{r['forward_ms']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_tlm"))
    ap.add_argument("--datasets", default="synthetic,bccd")
    ap.add_argument("--runs", help="comma-separated subset of tlm,naive,heads,per-class,oracle")
    ap.add_argument("--steps", type=int, default=120,
                    help="optimizer steps per approach (per-class and heads share them among their models/heads)")
    ap.add_argument("--minutes", type=float, default=6.0, help="wall-clock budget per approach (with --steps 0)")
    ap.add_argument("--image-size", type=int, default=256, help="synthetic input size")
    ap.add_argument("--bccd-image-size", type=int, default=320)
    ap.add_argument("--synthetic-images", type=int, default=450)
    ap.add_argument("--bccd", type=Path, default=BCCD_DEFAULT)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--cost-images", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is several times faster than 2 when other jobs share the 2 cores)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--table", action="store_true", help="print the table of OUT/results.json and stop")
    ap.add_argument("--reeval", action="store_true", help="add per-project figures to recorded rows and stop")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    done = json.loads(results_path.read_text()) if results_path.exists() else {"rows": []}
    if args.table:
        print(table(done["rows"]))
        return 0
    if args.reeval:
        done["rows"] = [r if "missing_recall" in r else reevaluate(r, out) for r in done["rows"]]
        results_path.write_text(json.dumps(done, indent=1))
        print(table(done["rows"]))
        return 0
    torch.set_num_threads(args.threads)
    done["machine"] = {"cpu_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
                       "platform": platform.platform(), "torch": torch.__version__}
    wanted = set(args.runs.split(",")) if args.runs else None
    for dataset in args.datasets.split(","):
        part, oracle = build(dataset, out, args)
        for run in RUNS[dataset]:
            if wanted and run not in wanted:
                continue
            if any(r["dataset"] == dataset and r["approach"] == run for r in done["rows"]):
                print(f"{dataset}/{run}: already in {results_path}, skipped")
                continue
            t = time.perf_counter()
            row = run_one(dataset, run, part, oracle, args, out)
            done["rows"].append(row)
            results_path.write_text(json.dumps(done, indent=1))
            print(f"{dataset}/{run}: mAP@0.5 {fmt(row['mAP50'])}, partial mAP@0.5 {fmt(row['partial_mAP50'])}, "
                  f"recall {fmt(row['partial_recall'])} ({time.perf_counter() - t:.0f} s)", flush=True)
    print(table(done["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

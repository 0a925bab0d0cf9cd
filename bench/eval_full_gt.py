"""Score checkpoints on a workspace's full ground truth, with the recall on objects the image's own
customer does not label (the figure naive merging destroys).

    .venv/bin/python bench/eval_full_gt.py WS MODEL_DIR [MODEL_DIR ...] [--split test]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_tlm import missing_recall, partial_nodes
from inference.evaluate import evaluate_ground_truth
from inference.predictor import Predictor
from projects.demo import GROUND_TRUTH
from projects.workspace import Workspace


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ws", type=Path)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--split", default="test")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    print("| model | approach | mAP@0.5 | mAP@[.5:.95] | recall@0.3 | recall@0.3 where the customer does not label |")
    print("|---|---|---:|---:|---:|---:|")
    with Workspace.open(args.ws) as ws:
        nodes, _ = partial_nodes(ws)
        labeled = {p: set(ws.project_view(p).labeled_nodes) for p in ws.project_names()}
        for folder in args.models:
            p = Predictor.from_checkpoint(folder, device="cpu", super_taxonomy=ws.super_taxonomy())
            ev = evaluate_ground_truth(ws, p, args.ws / GROUND_TRUTH, split=args.split, nodes=nodes, per_project=True)
            miss = missing_recall(ev, labeled, nodes)
            print(f"| {folder} | {p.checkpoint.meta['approach']} | {100 * ev.map50:.1f} | {100 * ev.map:.1f} | "
                  f"{100 * ev.recall:.1f} | {100 * miss['missing_recall']:.1f} ({miss['missing_gt']} objects) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

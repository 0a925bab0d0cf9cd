"""Store figures: what the read-only identification (+ quick_check) adds to opening a big workspace, and
several writer processes editing one workspace at once (failures must be 0; edit latency p50/p95).

    .venv/bin/python bench/bench_store.py [--folder /tmp/bench_store] [--images 100000] [--annotations 1000000]
                                          [--writers 1 2 4] [--edits 200]

Prints a Markdown table; never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_gui import build
from projects.connection import identify
from projects.schema import APP_ID
from projects.taxonomy import CustomerTaxonomy, Label
from projects.workspace import Workspace

WRITER = textwrap.dedent("""
    import json, sys, time
    from projects.workspace import Workspace
    ws = Workspace.open(sys.argv[1])
    n = int(sys.argv[2])
    image = ws.image_ids("P")[0]
    label = ws.labels("P")[0]["id"]
    times, errors = [], 0
    for i in range(n):
        t = time.perf_counter()
        try:
            aid = ws.add_annotation(image, label, (i, i, i + 5, i + 5), author=sys.argv[3])
            ws.update_annotation(aid, box=(i, i, i + 6, i + 6))
        except Exception:
            errors += 1
        times.append(time.perf_counter() - t)
    print(json.dumps({"times": times, "errors": errors}))
""")


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def bench_open(folder: Path, runs: int = 5) -> dict:
    db = folder / "labeler.sqlite"
    ident, total = [], []
    for _ in range(runs):
        t = time.perf_counter()
        identify(db, APP_ID)
        ident.append(time.perf_counter() - t)
        t = time.perf_counter()
        Workspace.open(folder).close()
        total.append(time.perf_counter() - t)
    return {"size_mb": db.stat().st_size / 1e6, "identify_s": median(ident), "open_s": median(total)}


def bench_writers(folder: Path, writers: int, edits: int) -> dict:
    if not (folder / "labeler.sqlite").exists():
        with Workspace.create(folder) as ws:
            ws.add_project("P", CustomerTaxonomy([Label("Human", "person")]))
            ws.bulk_import(ws.project_id("P"), [{"path": "/x.png", "sha256": "x", "width": 64, "height": 64}],
                           {"image": [], "label_id": 1, "x1": [], "y1": [], "x2": [], "y2": [],
                            "provenance": "imported", "author": "b", "model_id": None, "created_at": "t",
                            "updated_at": "t", "deleted_at": None})
    root = str(Path(__file__).resolve().parents[1])
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(edits), f"w{k}"],
                              stdout=subprocess.PIPE, text=True, cwd=root) for k in range(writers)]
    results = [json.loads(p.communicate()[0]) for p in procs]
    wall = time.perf_counter() - t
    times = [x for r in results for x in r["times"]]
    return {"writers": writers, "edits": len(times), "errors": sum(r["errors"] for r in results),
            "edits_per_s": len(times) / wall, "p50_ms": 1000 * median(times), "p95_ms": 1000 * pct(times, 0.95)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=Path("/tmp/bench_store"))
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--annotations", type=int, default=1_000_000)
    ap.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--edits", type=int, default=200)
    args = ap.parse_args(argv)
    big = args.folder / f"big-{args.images}-{args.annotations}"
    if not (big / "labeler.sqlite").exists():
        build(big, args.images, args.annotations, 20)
    o = bench_open(big)
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}\n")
    print("| workspace | file | read-only identify + quick_check | whole open | identify share |")
    print("|---|---:|---:|---:|---:|")
    print(f"| {args.images:,} images, {args.annotations:,} annotations | {o['size_mb']:.0f} MB | "
          f"{1000 * o['identify_s']:.0f} ms | {1000 * o['open_s']:.0f} ms | {o['identify_s'] / o['open_s']:.0%} |")
    print("\n| writer processes | edits (add + update) | failed | edits/s | p50 | p95 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.writers:
        r = bench_writers(args.folder / f"writers-{n}", n, args.edits)
        print(f"| {n} | {r['edits']} | {r['errors']} | {r['edits_per_s']:.0f} | {r['p50_ms']:.1f} ms | "
              f"{r['p95_ms']:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

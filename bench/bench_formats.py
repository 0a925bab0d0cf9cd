"""COCO import and export at scale, beside pycocotools loading the same file in the same run.

    .venv/bin/python bench/bench_formats.py                      # 100,000 images, 1,000,000 boxes
    .venv/bin/python bench/bench_formats.py --images 10000 --boxes 100000

It writes tiny real PNG images (32x24, each different, so every content hash differs) and one COCO
file naming them, then times each step in a fresh Python process and reads that process's peak
resident memory (VmHWM, which includes the interpreter and its imported libraries):

- json.load: Python's json parsing the file, nothing else;
- pycocotools: `COCO(file)`, the reference reader (json.load plus its index);
- import: `labeler import` of the file into a new workspace, every image decoded and hashed;
- import --trust-sizes: the same taking sizes from the file (images hashed, not decoded);
- export: the imported project back to COCO (annotation file only, --no-images).

Ratios are against pycocotools' time and memory. The machine and anything else running on it change
the figures: every step runs --repeat times, round-robin, and the median and the fastest run are shown.
The bench never asserts on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CATEGORIES = ["car", "truck", "person", "bicycle", "traffic_light"]
W, H = 32, 24


def make_data(folder: Path, n_images: int, n_boxes: int, seed: int = 0) -> Path:
    """Tiny distinct PNGs and a COCO file with n_boxes spread over them (deterministic)."""
    import cv2
    import numpy as np

    images = folder / "images"
    coco = folder / "annotations.json"
    if coco.is_file() and len(list(images.iterdir())) == n_images:
        return coco
    shutil.rmtree(folder, ignore_errors=True)
    images.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    for i in range(n_images):
        px = base.copy()
        px[0, :8] = np.frombuffer(i.to_bytes(24, "little"), dtype=np.uint8).reshape(8, 3)  # unique content
        ok, buf = cv2.imencode(".png", px)
        (images / f"{i:07d}.png").write_bytes(buf.tobytes())
    per_image = rng.multinomial(n_boxes, np.full(n_images, 1 / n_images))
    image_of = np.repeat(np.arange(n_images), per_image)
    x1 = rng.uniform(0, W - 4, n_boxes)
    y1 = rng.uniform(0, H - 4, n_boxes)
    w = rng.uniform(1, 4, n_boxes)
    h = rng.uniform(1, 4, n_boxes)
    cats = rng.integers(1, len(CATEGORIES) + 1, n_boxes)
    doc = {"images": [{"id": i + 1, "file_name": f"images/{i:07d}.png", "width": W, "height": H}
                      for i in range(n_images)],
           "categories": [{"id": k + 1, "name": n, "supercategory": ""} for k, n in enumerate(CATEGORIES)],
           "annotations": [{"id": k + 1, "image_id": int(image_of[k]) + 1, "category_id": int(cats[k]),
                            "bbox": [round(float(x1[k]), 2), round(float(y1[k]), 2), round(float(w[k]), 2),
                                     round(float(h[k]), 2)], "area": round(float(w[k] * h[k]), 2), "iscrowd": 0}
                           for k in range(n_boxes)]}
    coco.write_text(json.dumps(doc))
    return coco


# --- one measured step per child process ------------------------------------------------------------
def _step(name: str, coco: Path, work: Path) -> dict:
    t0 = time.perf_counter()
    extra: dict = {}
    if name == "json.load":
        with open(coco) as f:
            json.load(f)
    elif name == "pycocotools":
        import contextlib
        import io

        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            COCO(str(coco))
    elif name.startswith("import"):
        from projects.formats import ImportOptions, import_annotations
        from projects.workspace import Workspace

        phases = _time_phases()

        t0 = time.perf_counter()  # count the import, not library loading (the others do not load ours either)
        ws_dir = work / f"ws-{name.replace(' ', '_')}"
        shutil.rmtree(ws_dir, ignore_errors=True)
        ws = Workspace.create(ws_dir)
        ws.add_project("bench")
        rep = import_annotations(ws, "bench", "coco", coco,
                                 ImportOptions(add_labels=True, trust_sizes="trust" in name, workers=2))
        extra = {"boxes": rep.boxes_imported, "images": rep.images_added, "issues": dict(rep.counts),
                 "phases": phases}
        ws.close()
    elif name == "export":
        from projects.formats import export_project
        from projects.workspace import Workspace

        t0 = time.perf_counter()
        out = work / "export"
        shutil.rmtree(out, ignore_errors=True)
        with Workspace.open(work / "ws-import_--trust-sizes") as ws:
            rep = export_project(ws, "bench", "coco", out, copy_images=False)
        extra = {"boxes": rep.boxes, "images": rep.images, "bytes": (out / "annotations.json").stat().st_size}
    else:
        raise SystemExit(f"unknown step {name}")
    seconds = time.perf_counter() - t0
    return {"step": name, "seconds": seconds, "peak_mib": _peak_mib(), **extra}


def _time_phases() -> dict[str, float]:
    """Wrap the importer's stages to time them (seconds, filled in as the import runs)."""
    import functools

    import projects.formats.coco as coco
    import projects.formats.importer as importer
    from projects.workspace import Workspace

    spent: dict[str, float] = {}
    stages = [(coco, "read_json", "parse JSON"), (coco, "parse_coco", "read COCO records"),
              (importer, "_locate_and_probe", "find, hash (and decode) images"),
              (importer, "_check_boxes", "check boxes"), (Workspace, "bulk_import", "SQLite insert (one transaction)"),
              (importer, "_apply", "write, all told")]
    for owner, attr, label in stages:
        fn = getattr(owner, attr)

        def timed(*a, _fn=fn, _label=label, **k):
            t = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                spent[_label] = spent.get(_label, 0.0) + time.perf_counter() - t

        setattr(owner, attr, functools.wraps(fn)(timed))
    return spent


def _peak_mib() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a
    child started by a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


STEPS = ["json.load", "pycocotools", "import", "import --trust-sizes", "export"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--boxes", type=int, default=1_000_000)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/labeler-bench-formats"))
    p.add_argument("--repeat", type=int, default=3, help="rounds of every step (default 3)")
    p.add_argument("--step", help=argparse.SUPPRESS)
    args = p.parse_args()
    data = args.workdir / f"data-{args.images}-{args.boxes}"
    if args.step:
        print(json.dumps(_step(args.step, data / "annotations.json", args.workdir)))
        return
    t0 = time.perf_counter()
    coco = make_data(data, args.images, args.boxes)
    print(f"data: {args.images} images, {args.boxes} boxes, {coco.stat().st_size / 1e6:.0f} MB COCO file "
          f"(made in {time.perf_counter() - t0:.0f} s)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")
    runs: dict[str, list[dict]] = {step: [] for step in STEPS}
    for _ in range(args.repeat):  # round-robin, so a burst of load from other jobs hits every step alike
        for step in STEPS:
            out = subprocess.run([sys.executable, __file__, "--images", str(args.images), "--boxes",
                                  str(args.boxes), "--workdir", str(args.workdir), "--step", step],
                                 capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"step {step} failed:\n{out.stderr}")
            runs[step].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {step: statistics.median(r["seconds"] for r in runs[step]) for step in STEPS}
    best = {step: min(r["seconds"] for r in runs[step]) for step in STEPS}
    peak = {step: max(r["peak_mib"] for r in runs[step]) for step in STEPS}
    ref = "pycocotools"
    print(f"{args.repeat} rounds; seconds as median (min), ratios to pycocotools of the medians (of the mins)")
    print(f"{'step':<22}{'seconds':>16}{'x pycocotools':>18}{'peak MiB':>10}{'x pycocotools':>15}")
    for step in STEPS:
        print(f"{step:<22}{med[step]:>8.1f} ({best[step]:>5.1f}){med[step] / med[ref]:>10.2f} "
              f"({best[step] / best[ref]:>4.2f}){peak[step]:>10.0f}{peak[step] / peak[ref]:>15.2f}")
    for step in ("import", "import --trust-sizes", "export"):
        r = min(runs[step], key=lambda r: r["seconds"])
        print(f"{step}: {r.get('images')} images, {r.get('boxes')} boxes"
              + (f", issues {r['issues']}" if r.get("issues") else ""))
        if r.get("phases"):
            print("    fastest run: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["phases"].items()))


if __name__ == "__main__":
    main()

"""Labeling-window figures: open time at scale, image switch latency, edit commit time, event-loop stalls.

    QT_QPA_PLATFORM=offscreen nice .venv/bin/python bench/bench_gui.py [--out /tmp/labeler-bench-gui]
        [--images 100000] [--annotations 1000000] [--files 60] [--dwell-ms 300] [--json FILE]

It builds (once, then reuses) a workspace of `--images` image rows and `--annotations` annotations
with a fast bulk builder (sqlite-utils insert_all on the real schema, see `build`). The first
`--files` rows point at real 1920x1080 JPEGs written here; the rest point at files that do not
exist (the window would show its "cannot show" placeholder for them; the benchmark never goes
there). A second project holds three 8000x6000 JPEGs for the large-image figures.

Figures (each timed in the running app, offscreen rendering, real key and mouse events):
- open: Workspace.open + session + window + first image decoded and painted (in-process; Python
  and Qt already imported), and the whole `labeler open --screenshot` process as a cold start;
- switch: key D to the next image until it is on the canvas and painted (a synchronous grab of the
  canvas), p50/p95/max over `--files - 1` switches, with an annotator dwell of `--dwell-ms` between
  switches, with prefetch and without it;
- edit commit: mouse release of a drawn box, an arrow-key nudge, a class key and Ctrl+Z, each until
  the row is committed and the canvas and lists show it;
- stalls: the longest gap between ticks of a 1 ms timer while D is held (autorepeat every 33 ms)
  across the real images, and while 8000x6000 images load.
Nothing is asserted: the figures are printed, with the machine's load, for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PySide6.QtCore import QEventLoop, QObject, QPoint, Qt, QTimer  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from labeler.app.loader import ImageLoader  # noqa: E402
from labeler.app.main_window import MainWindow  # noqa: E402
from labeler.app.session import LabelingSession  # noqa: E402
from projects.imaging import write_image  # noqa: E402
from projects.split import split_bucket  # noqa: E402
from projects.synthetic import make_scene  # noqa: E402
from projects.taxonomy import CustomerTaxonomy, resource_path  # noqa: E402
from projects.workspace import Workspace, now  # noqa: E402

BIG, HUGE = "Big", "Huge"


# --- the bulk builder (bench only: the product adds images through Workspace.add_images) --------
def build(folder: Path, n_images: int, n_annotations: int, n_files: int) -> None:
    marker = folder / "bench-sizes.json"
    sizes = {"images": n_images, "annotations": n_annotations, "files": n_files}
    if marker.exists() and json.loads(marker.read_text()) == sizes:
        print(f"reusing {folder} ({n_images} images, {n_annotations} annotations)")
        return
    if folder.exists():
        raise SystemExit(f"{folder} exists but was built with other sizes; remove it or pick --out")
    t = time.perf_counter()
    ws = Workspace.create(folder)
    ws.add_project(BIG, CustomerTaxonomy.load(resource_path("taxonomies", "B.yaml")))
    ws.add_project(HUGE, CustomerTaxonomy.load(resource_path("taxonomies", "B.yaml")))
    (folder / "images").mkdir()
    for i in range(n_files):
        write_image(folder / "images" / f"img_{i:06d}.jpg", make_scene(i, "night", size=(1920, 1080)).image)
    huge = make_scene(7, "day", size=(8000, 6000)).image
    for i in range(3):
        write_image(folder / "images" / f"huge_{i}.jpg", np.roll(huge, 500 * i, axis=1))
    ws.add_images(HUGE, sorted((folder / "images").glob("huge_*.jpg")))
    pid = ws.project_id(BIG)
    labels = [lab["id"] for lab in ws.labels(BIG)]
    rng = np.random.default_rng(0)
    stamp = now()
    statuses = rng.choice(["submitted", "in_progress", "unlabeled"], size=n_images, p=[0.6, 0.05, 0.35])

    def image_rows():
        for i in range(n_images):
            sha = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
            yield {"project_id": pid, "path": f"images/img_{i:06d}.jpg", "sha256": sha, "width": 1920,
                   "height": 1080, "added_at": stamp, "split_bucket": split_bucket(sha),
                   "status": str(statuses[i]), "status_updated_at": stamp}

    with ws.transaction():
        ws.db["images"].insert_all(image_rows(), batch_size=5000)
    first_id = ws.image_ids(BIG)[0]
    per_image = n_annotations // n_images

    def annotation_rows():
        for k in range(n_annotations):
            i = min(k // max(per_image, 1), n_images - 1)
            x, y = float(rng.integers(0, 1700)), float(rng.integers(0, 900))
            w, h = float(rng.integers(20, 220)), float(rng.integers(20, 180))
            yield {"image_id": first_id + i, "label_id": labels[k % len(labels)], "x1": x, "y1": y, "x2": x + w,
                   "y2": y + h, "provenance": "imported", "author": "bench", "model_id": None,
                   "created_at": stamp, "updated_at": stamp, "deleted_at": None}

    with ws.transaction():
        ws.db["annotations"].insert_all(annotation_rows(), batch_size=5000)
    ws.db.execute("ANALYZE")
    ws.close()
    marker.write_text(json.dumps(sizes))
    print(f"built {folder} in {time.perf_counter() - t:.0f} s")


# --- helpers ------------------------------------------------------------------------------------
def wait_ready(window: MainWindow, timeout_s: float = 30) -> None:
    target = window.session.image["id"]
    if window.ready_image_id == target:
        return
    loop = QEventLoop()
    window.image_ready.connect(loop.quit)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    while window.ready_image_id != target:
        loop.exec()
    window.image_ready.disconnect(loop.quit)


def spin(ms: int) -> None:
    """Run the real event loop for `ms` (the annotator looking at the image)."""
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def ms(v: float) -> str:
    return f"{v * 1000:.1f} ms"


class StallMonitor(QObject):
    """A 1 ms timer on the GUI thread: a long gap between two ticks is a stall of the event loop."""

    def __init__(self):
        super().__init__()
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(1)
        self.timer.timeout.connect(self._tick)
        self.gaps: list[float] = []
        self._last: float | None = None

    def _tick(self) -> None:
        t = time.perf_counter()
        if self._last is not None:
            self.gaps.append(t - self._last)
        self._last = t

    def __enter__(self) -> StallMonitor:
        self.gaps, self._last = [], None
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.stop()


def open_window(folder: Path, project: str, prefetch: bool = True) -> MainWindow:
    session = LabelingSession(Workspace.open(folder), project)
    window = MainWindow(session, ImageLoader(prefetch=prefetch))
    window.resize(1440, 880)
    window.show()
    window.activateWindow()
    wait_ready(window)
    window.canvas.viewport().grab()
    return window


def close(window: MainWindow) -> None:
    window.close()
    window.session.ws.close()
    QApplication.processEvents()


# --- the figures --------------------------------------------------------------------------------
def bench_open(folder: Path, runs: int) -> dict:
    times, parts = [], {}
    for r in range(runs):
        t0 = time.perf_counter()
        ws = Workspace.open(folder)
        t1 = time.perf_counter()
        session = LabelingSession(ws, BIG)
        t2 = time.perf_counter()
        window = MainWindow(session, ImageLoader())
        window.resize(1440, 880)
        window.show()
        t3 = time.perf_counter()
        wait_ready(window)
        window.canvas.viewport().grab()
        t4 = time.perf_counter()
        times.append(t4 - t0)
        if r == runs - 1:
            parts = {"workspace_open_s": t1 - t0, "session_s (ids, counts, first rows)": t2 - t1,
                     "window_s": t3 - t2, "first_image_decode_and_paint_s": t4 - t3}
        close(window)
    shot = str(folder / "open-bench.png")
    only_open = ("import argparse, sys; import labeler.commands.open; from labeler.cli import COMMANDS; "
                 f"sys.exit(COMMANDS['open'].run(argparse.Namespace(ws={str(folder)!r}, project={BIG!r}, "
                 f"screenshot={shot!r}, image=None)))")
    cold, cold_open_only = [], []
    for _ in range(3):
        for argv, out in (([sys.executable, "-m", "labeler", "open", str(folder), "--project", BIG, "--screenshot",
                            shot], cold), ([sys.executable, "-c", only_open], cold_open_only)):
            t = time.perf_counter()
            subprocess.run(argv, check=True, cwd=ROOT, capture_output=True,
                           env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
            out.append(time.perf_counter() - t)
    return {"in_process_s": times, "parts": parts, "cold_process_s": cold, "cold_open_only_s": cold_open_only}


def bench_switch(folder: Path, files: int, dwell_ms: int, prefetch: bool) -> dict:
    window = open_window(folder, BIG, prefetch)
    times = []
    for _ in range(files - 1):
        t0 = time.perf_counter()
        QTest.keyClick(window.canvas, Qt.Key.Key_D)
        wait_ready(window)
        window.canvas.viewport().grab()
        times.append(time.perf_counter() - t0)
        spin(dwell_ms)
    decoded = window.loader.decoded
    close(window)
    return {"times_s": times, "decoded": decoded}


def bench_edits(folder: Path, n: int, files: int) -> dict:
    """Each round: draw a box, nudge it, give it a class by key, then delete it (Delete) or undo the class
    change (Ctrl+Z), so the image keeps about its 10 imported boxes, as a typical image would."""
    window = open_window(folder, BIG)
    c, vp, s = window.canvas, window.canvas.viewport(), window.session
    s.go_to(files - 1)  # a real file with its 10 imported boxes (a drag over a box draws too)
    wait_ready(window)
    _remove_bench_boxes(s.ws, s.image["id"])
    s.go_to(files - 2)
    s.go_to(files - 1)
    wait_ready(window)
    out = {"draw": [], "nudge": [], "class_key": [], "delete": [], "undo": []}
    rng = np.random.default_rng(1)
    for k in range(n):
        x, y = float(rng.integers(0, 1700)), float(rng.integers(0, 900))
        QTest.keyClick(c, Qt.Key.Key_Escape)
        a, b = c.to_view(x, y), c.to_view(x + 120, y + 90)
        QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
        QTest.mouseMove(vp, QPoint((a.x() + b.x()) // 2, (a.y() + b.y()) // 2))
        QTest.mouseMove(vp, b)
        class_key = Qt.Key.Key_2 if k % 2 else Qt.Key.Key_3
        steps = [("draw", lambda b=b: QTest.mouseRelease(vp, Qt.MouseButton.LeftButton,
                                                          Qt.KeyboardModifier.NoModifier, b)),
                 ("nudge", lambda: QTest.keyClick(c, Qt.Key.Key_Right)),
                 ("class_key", lambda key=class_key: QTest.keyClick(c, key)),
                 ("delete", lambda: QTest.keyClick(c, Qt.Key.Key_Delete)) if k % 2 else
                 ("undo", lambda: QTest.keyClick(c, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier))]
        for name, act in steps:
            t = time.perf_counter()
            act()
            out[name].append(time.perf_counter() - t)
        if not k % 2:
            QTest.keyClick(c, Qt.Key.Key_Delete)  # untimed: keep the image at its usual number of boxes
        spin(5)  # let the repaint happen, as between an annotator's key presses
    boxes = len(s.annotations)
    _remove_bench_boxes(s.ws, s.image["id"])
    close(window)
    return {**out, "boxes_on_image_at_end": boxes}


def _remove_bench_boxes(ws: Workspace, image_id: int) -> None:
    """Soft-delete the boxes earlier runs drew, so every run edits an image with its 10 imported boxes."""
    with ws.transaction():
        for a in ws.annotations(image_id):
            if a["provenance"] != "imported":
                ws.delete_annotation(a["id"])


def bench_stalls(folder: Path, files: int) -> dict:
    window = open_window(folder, BIG)
    with StallMonitor() as mon:
        loop = QEventLoop()
        presses = {"n": 0}

        def press():
            if presses["n"] >= files - 1:
                loop.quit()
                return
            presses["n"] += 1
            QTest.keyClick(window.canvas, Qt.Key.Key_D)

        held = QTimer()
        held.setInterval(33)  # a held key autorepeats at about 30 per second
        held.timeout.connect(press)
        held.start()
        loop.exec()
        held.stop()
        spin(500)
    fast = mon.gaps
    close(window)
    window = open_window(folder, HUGE)
    shown = []
    with StallMonitor() as mon:
        for _ in range(2):
            t = time.perf_counter()
            QTest.keyClick(window.canvas, Qt.Key.Key_D)
            wait_ready(window)
            shown.append(time.perf_counter() - t)
            spin(300)
    huge = mon.gaps
    c = window.canvas
    t = time.perf_counter()
    c.viewport().grab()
    fit_paint = time.perf_counter() - t
    c.actual_size()
    t = time.perf_counter()
    c.viewport().grab()
    full_paint = time.perf_counter() - t
    close(window)
    return {"fast_switch_gaps_s": fast, "huge_gaps_s": huge, "huge_shown_s": shown,
            "huge_fit_paint_s": fit_paint, "huge_100pct_paint_s": full_paint}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/labeler-bench-gui")
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--annotations", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--dwell-ms", type=int, default=300)
    ap.add_argument("--edits", type=int, default=100)
    ap.add_argument("--json", help="also write the raw figures here")
    args = ap.parse_args()
    folder = Path(args.out)
    print(f"machine: {os.cpu_count()} CPUs, load average before: {os.getloadavg()}")
    build(folder, args.images, args.annotations, args.files)
    app = QApplication.instance() or QApplication([])
    app.setApplicationName("Labeler bench")

    res = {"open": bench_open(folder, 5)}
    o = res["open"]
    print(f"\nopen {args.images:,} images / {args.annotations:,} annotations, first image shown and painted:")
    print(f"  in-process: first {ms(o['in_process_s'][0])}, median {ms(statistics.median(o['in_process_s']))}, "
          f"max {ms(max(o['in_process_s']))} ({len(o['in_process_s'])} runs)")
    for k, v in o["parts"].items():
        print(f"    {k}: {ms(v)}")
    print(f"  cold `labeler open --screenshot` process (Python + Qt start, every command module imported, PNG "
          f"written): median {statistics.median(o['cold_process_s']):.2f} s")
    print(f"  the same with only the open command imported: median {statistics.median(o['cold_open_only_s']):.2f} s")

    for prefetch in (True, False):
        r = bench_switch(folder, args.files, args.dwell_ms, prefetch)
        res[f"switch_prefetch_{prefetch}"] = r
        t = r["times_s"]
        print(f"\nswitch 1920x1080 JPEG (key D → decoded, on canvas, painted), prefetch {'on' if prefetch else 'off'}, "
              f"dwell {args.dwell_ms} ms: p50 {ms(pct(t, 50))}, p95 {ms(pct(t, 95))}, max {ms(max(t))} "
              f"({len(t)} switches, {r['decoded']} decodes)")

    e = bench_edits(folder, args.edits, args.files)
    res["edits"] = e
    print(f"\nedit commit on the {args.annotations:,}-annotation workspace (event → committed → canvas and lists "
          f"updated):")
    print(f"  ({e['boxes_on_image_at_end']} boxes on the image at the end)")
    for k in ("draw", "nudge", "class_key", "delete", "undo"):
        print(f"  {k:10s}: p50 {ms(pct(e[k], 50))}, p95 {ms(pct(e[k], 95))}, max {ms(max(e[k]))} ({len(e[k])})")

    s = bench_stalls(folder, args.files)
    res["stalls"] = s
    g = s["fast_switch_gaps_s"]
    print(f"\nevent loop while D is held (30 switches/s over {args.files} images): longest gap {ms(max(g))}, "
          f"p99 {ms(pct(g, 99))}, gaps > 50 ms: {sum(x > 0.05 for x in g)}")
    h = s["huge_gaps_s"]
    print(f"8000x6000 JPEGs: shown after {', '.join(ms(x) for x in s['huge_shown_s'])}; longest event-loop gap "
          f"while they load {ms(max(h))}; repaint at fit {ms(s['huge_fit_paint_s'])}, at 100 % "
          f"{ms(s['huge_100pct_paint_s'])}")
    print(f"\nload average after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

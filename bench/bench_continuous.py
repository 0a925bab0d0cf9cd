"""Continuous training on a simulated labeling stream: follow mode against "train once" and "retrain from scratch".

    nice -n 10 .venv/bin/python bench/bench_continuous.py stream --out /tmp/bench_continuous [--data synthetic|bccd]
    nice -n 10 .venv/bin/python bench/bench_continuous.py app --out /tmp/bench_continuous_app [--seconds 120]
    .venv/bin/python bench/bench_continuous.py table --out /tmp/bench_continuous    # prints the tables again

**stream.** A workspace receives images in batches (one import run each) with a domain shift part-way:
synthetic day → night → fog scenes (a customer labelling `Vehicle` and `Person`), or BCCD slides whose later
batches come stained differently (hue turned, slightly blurred: a new lab). An initial batch trains the first
model (registered as v1). Then, for every batch:

1. each arm's current model pre-labels the arriving images: **recall at the display threshold** (0.4, the
   window's default) against the ground truth, and the simulated annotator of bench/bench_annotator.py
   (same actions, same time model) gives **seconds per box** on the first `--sim-images` images;
2. the batch is submitted (its boxes with the provenance the follow model's pre-labels earned);
3. **follow**: the follow trainer (inference/follow.py, warm-started from v1, its stream seeing the new images)
   trains `--follow-steps` steps and checkpoints; the gate registers the checkpoint only when it beats the
   current model on the test split, and the window would then use it;
   **scratch**: a model is trained from the pretrained backbone on everything submitted so far
   (`--scratch-steps` steps) and used for the next batch;
   **once**: v1 stays.

Compute: training image passes (forward + backward, steps x batch) and evaluation forward passes, plus the
wall seconds they took. The trainer runs in lockstep with the stream here (train, then the next batch), so the
figures do not depend on what else the shared CPU was doing; `app` measures the live side.

Then **drift** (inference/drift.py, `--by import`, every split: v1 never saw a stream image) with the once
model: which import runs are flagged (the shifted ones should be, the unshifted ones not).

**app.** The labeling window (offscreen) on a demo workspace while the follow trainer runs as the window's
child process (started with its Start trainer button): a simulated annotator edits and submits through the
session; an event-loop probe measures every stall, and failed edits ("database is locked") are counted.
The same loop without the trainer is the control.

Figures go to OUT/results.json; `table` prints them. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from projects.imaging import ImageInfo, read_image, write_image
from projects.synthetic import CLASSES, customer_view, make_scene
from projects.taxonomy import CustomerTaxonomy, Label, Node, ProjectView, SuperTaxonomy
from projects.values import Box
from projects.workspace import Workspace

DISPLAY = 0.4
STREAM_PROJECT = "S"  # the stream's images; the initial batch goes to S0 (same labels) so drift sees the stream
INITIAL_PROJECT = "S0"
SYN_LABELS = [("Vehicle", "vehicle"), ("Person", "person")]


# --- data sources -------------------------------------------------------------------------------------------------
class Truth:
    """One arriving image: its file and the boxes the customer would draw (label, box)."""

    def __init__(self, path: Path, boxes: list[tuple[str, Box]], tag: str):
        self.path, self.boxes, self.tag = path, boxes, tag


class _Box:  # what bench_annotator.simulate reads from a true box
    def __init__(self, label: str, box: Box):
        self.label, self.box = label, box


def synthetic_source(folder: Path, view: ProjectView, classes: list[str] | None = None, max_objects: int = 8):
    """Scenes of the synthetic domains (`tag`: day, night, fog, wide), optionally of a few classes only."""
    table = {c: CLASSES[c] for c in classes} if classes else None

    def make(tag: str, k: int, n: int, seed0: int) -> list[Truth]:
        out = []
        for i in range(n):
            seed = seed0 + 1000 * k + i
            scene = make_scene(seed, tag, max_objects=max_objects, classes=table)
            path = folder / f"{tag}_{k:02d}_{i:03d}.jpg"
            write_image(path, scene.image)
            out.append(Truth(path, [(b.label, tuple(b.box)) for b in customer_view(scene, view)], tag))
        return out
    return make


BCCD_LABELS = [("erythrocyte", "rbc"), ("leukocyte", "wbc"), ("platelet", "platelets")]


def stain(image: np.ndarray) -> np.ndarray:
    """Another lab's slides: hue turned by 50 degrees, slightly blurred (as bench/bench_drift.py)."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + 25) % 180
    return cv2.GaussianBlur(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), (3, 3), 0)


def bccd_source(folder: Path):
    from tlm_data import BCCD_DEFAULT, BCCD_NODES, read_voc

    files = sorted((BCCD_DEFAULT / "BCCD" / "Annotations").glob("*.xml"))
    rng = np.random.default_rng(0)
    order = list(rng.permutation(len(files)))
    names = {n: lab for lab, n in BCCD_LABELS}
    used = [0]

    def make(tag: str, k: int, n: int, seed0: int) -> list[Truth]:
        out = []
        for _ in range(n):
            if used[0] >= len(order):
                break
            voc = read_voc(files[order[used[0]]])
            used[0] += 1
            image = read_image(BCCD_DEFAULT / "BCCD" / "JPEGImages" / voc.filename)
            boxes = [(names[BCCD_NODES[o.name]], o.box) for o in voc.objects]
            if tag == "stained":
                image = stain(image)
            elif tag == "zoomed":  # a lower-magnification objective: cells at 55 % (as bench/bench_drift.py)
                from bench_drift import zoom_out

                image, boxes = zoom_out(image, boxes)
            path = folder / f"{tag}_{k:02d}_{Path(voc.filename).stem}.png"
            write_image(path, image)
            out.append(Truth(path, boxes, tag))
        return out
    return make


# --- the workspace --------------------------------------------------------------------------------------------
def build_workspace(folder: Path, data: str) -> Workspace:
    if data == "bccd":
        sup = SuperTaxonomy([Node("rbc"), Node("wbc"), Node("platelets")], name="blood")
        labels = BCCD_LABELS
    else:
        sup, labels = None, SYN_LABELS
    ws = Workspace.create(folder, sup)
    for name in (INITIAL_PROJECT, STREAM_PROJECT):
        ws.add_project(name, CustomerTaxonomy([Label(a, n) for a, n in labels], {"vehicle_mirrors": True}, name=name))
    return ws


def add_batch(ws: Workspace, project: str, items: list[Truth], provenance: list[list[str]] | None,
              model_id: int | None) -> list[int]:
    """One import run (one insert: one import time), each image submitted with its boxes."""
    infos = [ImageInfo(t.path, hashlib.sha256(t.path.read_bytes()).hexdigest(), *read_image(t.path).shape[1::-1])
             for t in items]
    ids = ws.insert_images(ws.project_id(project), infos).added
    labels = {lab["name"]: lab["id"] for lab in ws.labels(project)}
    with ws.transaction():
        for j, (image_id, t) in enumerate(zip(ids, items)):
            for b, (label, box) in enumerate(t.boxes):
                prov = provenance[j][b] if provenance else "imported"
                ws.add_annotation(image_id, labels[label], box, provenance=prov, author="annotator",
                                  model_id=model_id if prov.startswith("prelabel") else None)
            ws.set_status(image_id, "submitted")
    return ids


# --- measuring a model on arriving images ---------------------------------------------------------------------------
def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(props, truth: list[tuple[str, Box]]) -> tuple[int, list[str]]:
    """Greedy same-label matching at IoU >= 0.5: (found, provenance per true box as the annotator would record
    it: accepted at IoU >= 0.9, adjusted below, drawn by hand when no proposal matched)."""
    pairs = sorted(((iou(p.box, t[1]), i, j) for i, p in enumerate(props) for j, t in enumerate(truth)
                    if p.label == t[0]), reverse=True)
    used_p, prov = set(), ["manual"] * len(truth)
    found = 0
    for v, i, j in pairs:
        if v < 0.5 or i in used_p or prov[j] != "manual":
            continue
        used_p.add(i)
        prov[j] = "prelabel_accepted" if v >= 0.9 else "prelabel_adjusted"
        found += 1
    return found, prov


def measure(predictor, view: ProjectView, items: list[Truth], sim_images: int, rng) -> dict[str, Any]:
    from bench_annotator import seconds, simulate

    from inference.prelabels import customer_proposals

    found = total = 0
    provenance = []
    images = [read_image(t.path) for t in items]
    for k in range(0, len(items), 4):
        for t, dets in zip(items[k:k + 4], predictor.predict(images[k:k + 4])):
            props = customer_proposals(dets, view, min_score=DISPLAY)
            f, prov = match(props, t.boxes)
            found += f
            total += len(t.boxes)
            provenance.append(prov)
    samples = [(img, [_Box(lab, box) for lab, box in t.boxes]) for img, t in zip(images[:sim_images],
                                                                                 items[:sim_images])]
    acts = simulate(samples, view, predictor, DISPLAY, rng) if sim_images else Counter()
    return {"recall": found / total if total else float("nan"), "found": found, "boxes": total,
            "sim_boxes": acts["boxes"], "sim_seconds": seconds(acts), "provenance": provenance,
            "actions": dict(acts)}


# --- the stream -------------------------------------------------------------------------------------------------
def schedule_of(text: str) -> list[str]:
    out = []
    for part in text.split(","):
        tag, n = part.split(":")
        out += [tag] * int(n)
    return out


def run_stream(args) -> dict[str, Any]:
    import torch

    from inference.drift import drift_report
    from inference.follow import FollowConfig, FollowTrainer
    from inference.predictor import Predictor
    from inference.train import TrainConfig, train

    torch.set_num_threads(args.threads)
    out = Path(args.out) / args.data
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    ws = build_workspace(out / "ws", args.data)
    view = ws.project_view(STREAM_PROJECT)
    classes = args.classes.split(",") if args.classes else None
    source = (bccd_source(out / "images") if args.data == "bccd" else
              synthetic_source(out / "images", view, classes, args.max_objects))
    first_tag = "clean" if args.data == "bccd" else "day"
    schedule = schedule_of(args.schedule or ("clean:3,zoomed:3" if args.data == "bccd" else "day:2,night:4,fog:2"))
    rng = np.random.default_rng(1)
    size = args.image_size or 256
    base = dict(image_size=size, batch_size=args.batch_size, lr=args.lr, progress=False, evaluate=False)
    report: dict[str, Any] = {"data": args.data, "schedule": schedule, "batch_images": args.batch,
                              "initial_images": args.initial, "image_size": size, "batch_size": args.batch_size,
                              "initial_steps": args.initial_steps, "follow_steps": args.follow_steps,
                              "scratch_steps": args.scratch_steps, "threads": args.threads,
                              "follow_lr": args.follow_lr, "lr": args.lr, "new_share": args.new_share,
                              "classes": args.classes, "max_objects": args.max_objects,
                              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
                              "batches": []}

    # the initial batch and the model trained once at the start (v1)
    initial = source(first_tag, 0, args.initial, 10_000)
    add_batch(ws, INITIAL_PROJECT, initial, None, None)
    t0 = time.perf_counter()
    first = train(ws, out / "once", TrainConfig(steps=args.initial_steps, **base))
    report["initial_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"v1 trained on {args.initial} {first_tag} images in {report['initial_seconds']} s", flush=True)
    once = Predictor.from_checkpoint(out / "once")

    # the follow trainer, warm-started from v1, in lockstep with the stream
    follow_cfg = TrainConfig(**{**{k: v for k, v in base.items() if k != "evaluate"}, "lr": args.follow_lr})
    follow = FollowTrainer(ws, out / "follow", follow_cfg,
                           FollowConfig(every_steps=10 ** 9, poll_s=3600, patience=0, cohorts=3,
                                        recent_share=args.new_share, warmup_steps=args.follow_warmup))
    evaluated = [0]
    real_predict = follow._predict

    def counting_predict(predictor, ids, cache=None):
        before = len(cache) if cache is not None else 0
        got = real_predict(predictor, ids, cache)
        evaluated[0] += len(got) - before
        return got

    follow._predict = counting_predict
    follow.open()
    follow_pred, follow_model = once, first.model_id
    scratch_pred = once
    cost = {"follow": {"train_images": 0, "eval_images": 0, "seconds": 0.0},
            "scratch": {"train_images": 0, "eval_images": 0, "seconds": 0.0}}
    shift_at = {}
    try:
        for k, tag in enumerate(schedule, start=1):
            items = source(tag, k, args.batch, 20_000)
            if not items:
                break
            if tag not in shift_at:
                shift_at[tag] = k
            row: dict[str, Any] = {"batch": k, "domain": tag, "images": len(items)}
            arms = [("follow", follow_pred), ("once", once)]
            arms += [("scratch", scratch_pred)] if args.scratch_steps else []
            for name, pred in arms:
                m = measure(pred, view, items, args.sim_images, rng)
                row[name] = {key: m[key] for key in ("recall", "found", "boxes", "sim_boxes", "sim_seconds")}
                row[name]["model"] = pred.version
                if name == "follow":
                    provenance = m["provenance"]
            add_batch(ws, STREAM_PROJECT, items, provenance, follow_model)

            # follow: a few steps on the stream (the new images first, replay of the rest), then the gate
            t = time.perf_counter()
            follow.stream.poke()
            steps_before = follow.counters["images"]
            follow.train_steps(args.follow_steps)
            outcome = follow.checkpoint()
            cost["follow"]["seconds"] += time.perf_counter() - t
            cost["follow"]["train_images"] += follow.counters["images"] - steps_before
            cost["follow"]["eval_images"] = evaluated[0]
            g = outcome.gate
            row["follow"]["gate"] = {"candidate": g.candidate, "incumbent": g.incumbent,
                                     "registered": outcome.model_id is not None, "eval_images": g.eval_images}
            if outcome.model_id is not None:
                follow_pred, follow_model = follow._incumbent["predictor"], outcome.model_id

            # scratch: a new model from the pretrained backbone on everything submitted so far
            if args.scratch_steps:
                t = time.perf_counter()
                res = train(ws, out / f"scratch_{k:02d}", TrainConfig(steps=args.scratch_steps, register=False,
                                                                      **base))
                cost["scratch"]["seconds"] += time.perf_counter() - t
                cost["scratch"]["train_images"] += res.metrics["train"]["images_seen"]
                scratch_pred = Predictor.from_checkpoint(out / f"scratch_{k:02d}")
            report["batches"].append(row)
            print(json.dumps({"batch": k, "domain": tag, **{a: round(row[a]["recall"], 3) for a, _ in arms},
                              "registered": row["follow"]["gate"]["registered"]}), flush=True)
            _save(out, report, cost)
    finally:
        follow.close()
    report["cost"] = {a: {**c, "seconds": round(c["seconds"], 1)} for a, c in cost.items()}
    report["shift_at"] = shift_at

    # drift of the once model across the stream's import runs (it never trained on a stream image)
    t = time.perf_counter()
    d = drift_report(ws, once, by="import", projects=[STREAM_PROJECT], splits=("train", "val", "test"),
                     bootstrap=args.bootstrap)
    report["drift"] = {"seconds": round(time.perf_counter() - t, 1), "flagged": d.flagged,
                       "cohorts": [{"key": c.key, "images": c.figures.images, "mAP50": c.figures.mAP50,
                                    "recall": c.figures.recall, "change": c.figures.change,
                                    "change_low": c.figures.change_low, "change_high": c.figures.change_high,
                                    "p_value": c.figures.p_value, "flags": c.flags} for c in d.cohorts]}
    report["drift"]["domains"] = [schedule[i] if i < len(schedule) else "?" for i in range(len(d.cohorts))]
    ws.close()
    _save(out, report, cost)
    return report


def _save(out: Path, report: dict[str, Any], cost: dict[str, Any]) -> None:
    report = {**report, "cost_so_far": cost}
    (out / "results.json").write_text(json.dumps(report, indent=1, default=float))


# --- the app while the trainer runs -------------------------------------------------------------------------------
class _Ticker:
    """The event-loop probe: the time between two ticks of a 5 ms timer (a stall shows as a long gap)."""

    def __init__(self, timer, gaps: list[float], ends: list[float]):
        self.timer, self.gaps, self.ends, self.last = timer, gaps, ends, timer.nsecsElapsed()

    def __call__(self) -> None:
        now = self.timer.nsecsElapsed()
        self.gaps.append((now - self.last) / 1e6)
        self.ends.append(now / 1e6)
        self.last = now


def classify_stalls(ends: list[float], gaps: list[float], spans: list[tuple[float, float, str]],
                    limit: float = 50.0) -> Counter:
    """Each event-loop gap over `limit` ms, by what overlapped it: the window's own edit or submit, the window's
    worker loading a model (a hot swap), a checkpoint of the trainer, or nothing we recorded ("other")."""
    out: Counter = Counter()
    for end, gap in zip(ends, gaps):
        if gap <= limit:
            continue
        start = end - gap
        hits = [kind for a, b, kind in spans if a <= end and b >= start]
        order = ("edit", "submit", "model load in the window's worker", "trainer checkpoint")
        out[next((k for k in order if k in hits), "other")] += 1
    return out


def run_app(args) -> dict[str, Any]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from inference.registry import register_checkpoint
    from projects.demo import build_demo
    from projects.taxonomy import resource_path

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    os.environ["LABELER_SETTINGS"] = str(out / "settings.ini")
    app = QApplication.instance() or QApplication([])
    results: dict[str, Any] = {"seconds": args.seconds, "edit_every_s": args.edit_every}
    for mode in ("without trainer", "with trainer"):
        folder = out / mode.replace(" ", "_") / "ws"
        build_demo(folder, n_images=args.images, seed=3).close()
        shutil.copytree(resource_path("models", "demo"), folder / "models" / "demo")
        with Workspace.open(folder) as ws:
            register_checkpoint(ws, folder / "models" / "demo")
        results[mode] = _measure_window(app, folder, mode == "with trainer", args)
        print(mode, json.dumps(results[mode]), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def _measure_window(app, folder: Path, with_trainer: bool, args) -> dict[str, Any]:
    """One window on `folder` for `args.seconds`: a simulated annotator edits and submits; every event-loop gap
    is measured and attributed to what overlapped it."""
    from PySide6.QtCore import QElapsedTimer, QTimer

    from labeler.app import trainer_panel
    from labeler.app.session import LabelingSession
    from labeler.app.window_runner import build_window
    from projects import trainer_status

    session = LabelingSession(Workspace.open(folder), "B")
    w = build_window(session, trainer=False, lint=False)
    panel = trainer_panel.install(w, extra_args=["--every-steps", str(args.every_steps), "--poll-seconds", "5"])
    w.resize(1440, 880)
    w.show()
    failed: list[str] = []
    session.failed.connect(failed.append)
    if with_trainer:
        panel.start()
        clock = time.monotonic()
        while (panel.running() is None or panel.running()["steps"] < 1) and time.monotonic() - clock < 300:
            app.processEvents()
            time.sleep(0.01)
    timer = QElapsedTimer()
    timer.start()
    spans: list[tuple[float, float, str]] = []  # (start ms, end ms, what) on the probe's clock
    marks = _Marks(timer, spans)
    w.prelabels.worker.status_changed.connect(marks.on_status)
    panel.poller.snapshot.connect(marks.on_snapshot)
    gaps: list[float] = []
    ends: list[float] = []
    probe = QTimer()
    probe.setInterval(5)
    probe.timeout.connect(_Ticker(timer, gaps, ends))
    probe.start()
    edits = submits = 0
    edit_ms: list[float] = []
    end = time.monotonic() + args.seconds
    next_edit = time.monotonic()
    rng = np.random.default_rng(0)
    swap_at = time.monotonic() + args.seconds / 2 if with_trainer and args.swap else None
    swapper: threading.Thread | None = None
    while time.monotonic() < end:
        app.processEvents()
        if swap_at is not None and time.monotonic() >= swap_at:
            # the gate decides whether the trainer registers within the run; so that a hot swap is measured
            # either way, register a new version from another connection, as the trainer's process does
            swapper = threading.Thread(target=_register_new_version, args=(folder,), daemon=True)
            swapper.start()
            swap_at = None
        if time.monotonic() >= next_edit and session.image is not None:
            wd, ht = session.image["width"], session.image["height"]
            x, y = float(rng.uniform(0, wd - 60)), float(rng.uniform(0, ht - 60))
            t0 = marks.ms()
            session.add_box((x, y, x + 50, y + 50))
            spans.append((t0, marks.ms(), "edit"))
            edit_ms.append(marks.ms() - t0)
            edits += 1
            if edits % 4 == 0:
                t0 = marks.ms()
                w.submit()
                spans.append((t0, marks.ms(), "submit"))
                submits += 1
            next_edit = time.monotonic() + args.edit_every
        time.sleep(0.001)
    probe.stop()
    if swapper is not None:
        swapper.join(60)
    run = trainer_status.latest_run(session.ws) if with_trainer else None
    if with_trainer:
        panel.stop()
        clock = time.monotonic()
        while panel.child is not None and panel.child.poll() is None and time.monotonic() - clock < 60:
            app.processEvents()
            time.sleep(0.05)
    g = np.array(gaps[1:]) if len(gaps) > 1 else np.array([0.0])
    stalls = classify_stalls(ends[1:], gaps[1:], spans)
    w.close()
    session.ws.close()
    return {"edits": edits, "submits": submits, "failed_edits": len(failed), "failures": failed[:5],
            "max_gap_ms": round(float(g.max()), 1), "p99_gap_ms": round(float(np.percentile(g, 99)), 1),
            "gaps_over_50ms": int((g > 50).sum()), "stalls_by_cause": dict(stalls),
            "max_edit_ms": round(max(edit_ms, default=0.0), 1),
            "model_loads": sum(1 for sp in spans if sp[2].startswith("model load")),
            "ticks": int(len(g)), "trainer_steps": run["steps"] if run else None,
            "trainer_checkpoints": run["checkpoints"] if run else None,
            "trainer_registered": run["registered"] if run else None}


def _register_new_version(folder: Path) -> None:
    """A copy of the demo model under a new version, registered through its own connection (a hot swap)."""
    from inference.registry import register_checkpoint

    dst = folder / "models" / "swapped"
    shutil.copytree(folder / "models" / "demo", dst)
    meta = json.loads((dst / "model.json").read_text())
    meta["version"] = f"{meta['version']}-swapped"
    (dst / "model.json").write_text(json.dumps(meta))
    with Workspace.open(folder) as ws:
        register_checkpoint(ws, dst)


class _Marks:
    """Spans of what happened, on the probe's clock: the window's worker loading a model, the trainer's checkpoints."""

    def __init__(self, timer, spans: list[tuple[float, float, str]]):
        self.timer, self.spans = timer, spans
        self.loading: float | None = None
        self.evaluating: float | None = None

    def ms(self) -> float:
        return self.timer.nsecsElapsed() / 1e6

    def on_status(self, text: str) -> None:
        if text.startswith("loading model"):
            self.loading = self.ms()
        elif self.loading is not None and ("ready" in text or "could not" in text):
            self.spans.append((self.loading, self.ms(), "model load in the window's worker"))
            self.loading = None

    def on_snapshot(self, snap) -> None:
        from labeler.app import trainer_panel

        state = snap.run["state"] if snap.run else None
        if state == "evaluating" and self.evaluating is None:
            self.evaluating = self.ms() - 1000 * trainer_panel.POLL_S  # seen up to a poll late
        elif state != "evaluating" and self.evaluating is not None:
            self.spans.append((self.evaluating, self.ms(), "trainer checkpoint"))
            self.evaluating = None


# --- tables -----------------------------------------------------------------------------------------------------
def print_tables(out: Path) -> None:
    for data in ("synthetic", "bccd"):
        path = out / data / "results.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        print(f"\n{data}: initial {r['initial_images']} images, batches of {r['batch_images']}, "
              f"{r['image_size']} px; steps: v1 {r['initial_steps']}, follow {r['follow_steps']} per checkpoint, "
              f"scratch {r['scratch_steps']} per checkpoint\n")
        names = [a for a in ("follow", "once", "scratch") if r["batches"] and a in r["batches"][0]]
        print(f"| batch | domain | {' | '.join(f'recall@0.4 {a}' for a in names)} | "
              f"{' | '.join(f's/box {a}' for a in names)} | follow gate (test mAP50: checkpoint vs current) |")
        print("|---:|---|" + "---:|" * (2 * len(names)) + "---|")
        for b in r["batches"]:
            def spb(a, b=b):
                x = b[a]
                return f"{x['sim_seconds'] / x['sim_boxes']:.1f}" if x["sim_boxes"] else "–"
            g = b["follow"]["gate"]
            gate = (f"{'registered' if g['registered'] else 'kept'} "
                    f"({_f(g['candidate'])} vs {_f(g['incumbent'])})")
            recalls = " | ".join(f"{b[a]['recall']:.3f}" for a in names)
            print(f"| {b['batch']} | {b['domain']} | {recalls} | {' | '.join(spb(a) for a in names)} | {gate} |")
        tot = {a: {k: sum(b[a][k] for b in r["batches"]) for k in ("found", "boxes", "sim_seconds", "sim_boxes")}
               for a in names}
        print("\n| arm | recall@0.4 over the stream | s/box over the stream | training image passes | eval forwards "
              "| seconds |")
        print("|---|---:|---:|---:|---:|---:|")
        cost = r.get("cost") or r.get("cost_so_far") or {}
        for a in names:
            t = tot[a]
            c = cost.get(a, {"train_images": 0, "eval_images": 0, "seconds": 0})
            print(f"| {a} | {t['found'] / max(t['boxes'], 1):.3f} | {t['sim_seconds'] / max(t['sim_boxes'], 1):.1f} | "
                  f"{c['train_images']:,} | {c['eval_images']:,} | {c['seconds']:.0f} |")
        for line in regain_lines(r, names):
            print(line)
        if "drift" in r:
            d = r["drift"]
            print(f"\ndrift (once model, by import run): flagged {d['flagged']}")
            for c, dom in zip(d["cohorts"], d["domains"]):
                print(f"  {c['key']} ({dom}): {c['images']} images, mAP50 {_f(c['mAP50'])}, recall {_f(c['recall'])}, "
                      f"change {_f(c['change'])} [{_f(c['change_low'])}, {_f(c['change_high'])}], "
                      f"p {_f(c['p_value'])}, flags {c['flags']}")
    app = out / "app" / "results.json"
    if app.is_file():
        print(json.dumps(json.loads(app.read_text()), indent=1))


def regain_lines(r: dict[str, Any], names: list[str]) -> list[str]:
    """After each shift: the pre-shift recall (the first domain's batches pooled, per arm) and how many new
    images of the shifted domain arrived before an arm's recall on an arriving batch was back at that level."""
    batches = r["batches"]
    if not batches:
        return []
    first = batches[0]["domain"]
    pre = {a: sum(b[a]["found"] for b in batches if b["domain"] == first) /
           max(1, sum(b[a]["boxes"] for b in batches if b["domain"] == first)) for a in names}
    out = ["", "| shift | arm | pre-shift recall | recall on the first shifted batch | new images of the shift until "
           "recall >= pre-shift |", "|---|---|---:|---:|---|"]
    starts = [i for i, b in enumerate(batches) if i and b["domain"] != batches[i - 1]["domain"]]
    for i in starts:
        dom = batches[i]["domain"]
        run = [b for b in batches[i:] if b["domain"] == dom]
        for a in names:
            seen, hit = 0, None
            for b in run:
                if b[a]["recall"] >= pre[a]:
                    hit = seen
                    break
                seen += b["images"]
            when = f"{hit}" if hit is not None else f"not within {seen}"
            out.append(f"| {batches[i - 1]['domain']} → {dom} | {a} | {pre[a]:.3f} | {run[0][a]['recall']:.3f} | "
                       f"{when} |")
    return out


def _f(v) -> str:
    return "–" if v is None or (isinstance(v, float) and v != v) else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("stream")
    s.add_argument("--out", required=True)
    s.add_argument("--data", choices=("synthetic", "bccd"), default="synthetic")
    s.add_argument("--schedule", help="domains of the batches, e.g. day:3,night:4,fog:4")
    s.add_argument("--initial", type=int, default=120)
    s.add_argument("--classes", help="synthetic: draw only these classes (e.g. car,truck,pedestrian_adult)")
    s.add_argument("--max-objects", type=int, default=8)
    s.add_argument("--batch", type=int, default=40)
    s.add_argument("--image-size", type=int)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--lr", type=float, default=2e-3)
    s.add_argument("--initial-steps", type=int, default=150)
    s.add_argument("--follow-steps", type=int, default=20)
    s.add_argument("--scratch-steps", type=int, default=150)
    s.add_argument("--new-share", type=float, default=0.5)
    s.add_argument("--follow-lr", type=float, default=1e-3)
    s.add_argument("--follow-warmup", type=int, default=10)
    s.add_argument("--sim-images", type=int, default=8)
    s.add_argument("--bootstrap", type=int, default=500)
    s.add_argument("--threads", type=int, default=2)
    a = sub.add_parser("app")
    a.add_argument("--out", required=True)
    a.add_argument("--seconds", type=float, default=120)
    a.add_argument("--images", type=int, default=60)
    a.add_argument("--edit-every", type=float, default=0.5)
    a.add_argument("--every-steps", type=int, default=15)
    a.add_argument("--swap", action=argparse.BooleanOptionalAction, default=True,
                   help="half-way through the run with the trainer, register a new model version (a hot swap)")
    t = sub.add_parser("table")
    t.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.what == "stream":
        run_stream(args)
        print_tables(Path(args.out))
    elif args.what == "app":
        run_app(args)
    else:
        print_tables(Path(args.out))


if __name__ == "__main__":
    main()

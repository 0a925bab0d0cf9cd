"""How well the linter finds known mistakes: inject errors into correct labels, lint, count.

Errors, drawn per box with a seeded generator, at most one per box: drop 10 % of boxes (a missed object),
swap the class of 5 % (to another label of the project; projects with one label cannot have swaps), shift
5 % to IoU 0.5-0.7 with the true box (half moved, half enlarged around the centre: a loose box), and
duplicate 2 % (a second box on the same object, IoU 0.75-0.95 with it). The model's predictions come from a
real checkpoint on images it was not trained on:

* synthetic: fresh scenes (seeds the demo never uses) of customers A, B and C in their domains, predicted
  by the demo model (`resources/models/demo`, trained by `labeler train` on the demo workspace);
* BCCD: the 364 real blood-cell images imported into a workspace; a model trained with `labeler train` on
  its stable *train* split; the linted images are the val and test splits the model never saw.

Reported, at the linter's default threshold: precision and recall per injected kind (a finding counts when
it points at an injected error of its kind: a missed finding within IoU 0.5 of a dropped box, a wrong-class,
bad-box or duplicate finding on the altered box), the findings the same linter raises on the *clean* labels
(BCCD's own labels are known to miss cells), and the share of injected errors whose image is among the top
10 % the linter ranks (with the best share any ranking could reach, since 10 % of the images cannot hold
every error when errors are spread over all of them). A second protocol puts errors into a random 10 % of
the images only (each gets at least one): there the top-10 % share is the recall of a reviewer who reads
only the linter's top tenth.

Run (figures go to docs/benchmarks/lint.md):
    nice .venv/bin/python bench/bench_lint.py --prepare-bccd            # BCCD workspace, prints the train command
    nice .venv/bin/python -m labeler train /tmp/labeler-bench/lint-bccd/ws --out /tmp/labeler-bench/lint-bccd/model \
        --image-size 384 --minutes 45 --half --seed 0 --no-register
    nice .venv/bin/python bench/bench_lint.py [--synthetic-model DIR] [--bccd-model DIR] [--draws 10]

Each figure pools `--draws` independent injection draws on the same images and predictions (the model
runs once per image); top-10 % shares are given as the mean and range over the draws.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.lint import EVERY_LABEL, LintConfig, lint_image  # noqa: E402
from inference.lint_calibration import fit_calibration  # noqa: E402
from inference.lint_types import Annotated  # noqa: E402
from inference.prelabels import customer_proposals  # noqa: E402
from projects.imaging import read_image  # noqa: E402
from projects.quality import box_iou  # noqa: E402
from projects.synthetic import customer_view, make_scene  # noqa: E402
from projects.taxonomy import CustomerTaxonomy, ProjectView, default_super_taxonomy, resource_path  # noqa: E402
from projects.values import Box  # noqa: E402
from projects.workspace import Workspace  # noqa: E402

RATES = {"drop": 0.10, "swap": 0.05, "shift": 0.05, "duplicate": 0.02}
FINDING_OF = {"drop": "missed", "swap": "wrong_class", "shift": "bad_box", "duplicate": "duplicate"}
BCCD_SUPER = {"name": "blood", "nodes": [{"name": "rbc"}, {"name": "wbc"}, {"name": "platelets"}]}
BCCD_LABELS = {"name": "BCCD", "labels": [{"name": "RBC", "node": "rbc"}, {"name": "WBC", "node": "wbc"},
                                          {"name": "Platelets", "node": "platelets"}]}
SYNTH_SEED0 = 1_000_000  # build_demo uses seeds seed * 100_003 + k, k < images: far below this


@dataclass
class Sample:
    """One image with its correct labels (label, box) in its project's taxonomy and the model's detections."""

    name: str
    width: int
    height: int
    boxes: list[tuple[str, Box]]
    view: ProjectView
    detections: list = field(default_factory=list)


@dataclass
class Injected:
    kind: str  # drop, swap, shift, duplicate
    image: int  # index into the samples
    annotation: int | None  # the altered box's annotation id (None for a drop)
    box: Box  # the true box (drop, shift), the altered box otherwise


# --- data -------------------------------------------------------------------------------------------------
def synthetic_samples(n_per_project: int, seed: int) -> list[tuple[Sample, np.ndarray]]:
    sup = default_super_taxonomy()
    out = []
    for p, name in enumerate(("A", "B", "C")):
        tax = CustomerTaxonomy.load(resource_path("taxonomies", f"{name}.yaml"))
        view = ProjectView(sup, tax)
        for k in range(n_per_project):
            scene = make_scene(SYNTH_SEED0 + seed * 10_000 + p * 1000 + k, tax.rules.get("domain", "day"))
            boxes = [(cb.label, cb.box) for cb in customer_view(scene, view)]
            h, w = scene.image.shape[:2]
            out.append((Sample(f"{name}/{k}", w, h, boxes, view), scene.image))
    return out


def prepare_bccd(bccd: Path, work: Path) -> Path:
    """A workspace with every BCCD image and box in project BCCD (submitted), for `labeler train`."""
    from labeler.cli import main as cli

    ws = work / "ws"
    if (ws / "labeler.sqlite").exists():
        return ws
    work.mkdir(parents=True, exist_ok=True)
    (work / "super.yaml").write_text(json.dumps(BCCD_SUPER))
    (work / "bccd.yaml").write_text(json.dumps(BCCD_LABELS))
    voc = bccd / "BCCD"
    for argv in (["init", ws, "--super-taxonomy", work / "super.yaml"],
                 ["project", "add", ws, "BCCD", "--taxonomy", work / "bccd.yaml"],
                 ["import", ws, "--project", "BCCD", "--format", "voc", voc / "Annotations",
                  "--images", voc / "JPEGImages"]):
        if cli([str(a) for a in argv]) != 0:
            shutil.rmtree(ws, ignore_errors=True)
            raise SystemExit(f"preparing the BCCD workspace failed at: labeler {' '.join(map(str, argv))}")
    return ws


def bccd_samples(ws_folder: Path) -> list[tuple[Sample, np.ndarray]]:
    """The BCCD images of the stable val and test splits (never trained on), with their imported labels."""
    from projects.split import split_of

    out = []
    with Workspace.open(ws_folder) as ws:
        view = ws.project_view("BCCD")
        for image_id in ws.image_ids("BCCD"):
            row = ws.image(image_id)
            if split_of(int(row["split_bucket"])) == "train":
                continue
            boxes = [(a["label"], (a["x1"], a["y1"], a["x2"], a["y2"])) for a in ws.annotations(image_id)]
            img = read_image(ws.image_path(row["path"]))
            out.append((Sample(Path(row["path"]).name, row["width"], row["height"], boxes, view), img))
    return out


def predict(samples: list[tuple[Sample, np.ndarray]], model: Path, threads: int, batch: int = 4) -> float:
    """Fill each sample's detections with the checkpoint's; returns seconds per image."""
    from inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(model, threads=threads, device="cpu")
    t = time.perf_counter()
    for i in range(0, len(samples), batch):
        chunk = samples[i: i + batch]
        for (s, _), dets in zip(chunk, predictor.predict([img for _, img in chunk])):
            s.detections = dets
    return (time.perf_counter() - t) / max(1, len(samples))


# --- injection --------------------------------------------------------------------------------------------
def _iou(a: Box, b: Box) -> float:
    return float(box_iou(np.array([a]), np.array([b]))[0, 0])


def _moved(box: Box, target: float, rng: np.random.Generator, w: int, h: int) -> Box | None:
    """`box` moved (or enlarged about its centre) so that its IoU with `box` is `target`, inside the image."""
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    for _ in range(20):
        if rng.random() < 0.5:  # loose: enlarge by k, IoU = 1 / k^2 while inside the image
            k = 1 / math.sqrt(target)
            out = (x1 - (k - 1) * bw / 2, y1 - (k - 1) * bh / 2, x2 + (k - 1) * bw / 2, y2 + (k - 1) * bh / 2)
        else:  # shifted along a random direction, step found by bisection
            a = rng.uniform(0, 2 * math.pi)
            ux, uy = math.cos(a) * bw, math.sin(a) * bh
            lo, hi = 0.0, 1.0
            for _ in range(40):
                mid = (lo + hi) / 2
                if _iou(box, (x1 + mid * ux, y1 + mid * uy, x2 + mid * ux, y2 + mid * uy)) > target:
                    lo = mid
                else:
                    hi = mid
            out = (x1 + lo * ux, y1 + lo * uy, x2 + lo * ux, y2 + lo * uy)
        if out[0] >= 0 and out[1] >= 0 and out[2] <= w and out[3] <= h:
            return out
    return None


def inject(samples: Sequence[Sample], rng: np.random.Generator, images: set[int] | None = None
           ) -> tuple[list[list[Annotated]], list[Injected]]:
    """Corrupted annotations per image and the list of injected errors. With `images`, only those images are
    corrupted and each gets at least one error (a dropped box when the draw gave none)."""
    anns_out, injected = [], []
    bounds = np.cumsum(list(RATES.values()))
    for i, s in enumerate(samples):
        anns: list[Annotated] = []
        mine: list[Injected] = []
        labels = [lab.name for lab in s.view.taxonomy.labels]
        corrupt = images is None or i in images
        for k, (label, box) in enumerate(s.boxes):
            u = rng.random() if corrupt else 1.0
            kind = next((name for name, b in zip(RATES, bounds) if u < b), None)
            if kind == "swap" and len(labels) < 2:
                kind = None
            new_box = _moved(box, rng.uniform(0.5, 0.7), rng, s.width, s.height) if kind == "shift" else box
            if kind == "shift" and new_box is None:
                kind, new_box = None, box
            if kind == "drop":
                mine.append(Injected("drop", i, None, box))
                continue
            if kind == "swap":
                label = str(rng.choice([n for n in labels if n != label]))
                mine.append(Injected("swap", i, k, box))
            elif kind == "shift":
                mine.append(Injected("shift", i, k, box))
            anns.append(Annotated(k, label, new_box))
            if kind == "duplicate":
                copy = _moved(box, rng.uniform(0.75, 0.95), rng, s.width, s.height)
                if copy is not None:
                    anns.append(Annotated(10_000 + k, label, copy))
                    mine.append(Injected("duplicate", i, 10_000 + k, copy))
        if images is not None and i in images and not mine and s.boxes:
            k = int(rng.integers(len(s.boxes)))
            anns = [a for a in anns if a.id != k]
            mine.append(Injected("drop", i, None, s.boxes[k][1]))
        anns_out.append(anns)
        injected += mine
    return anns_out, injected


# --- scoring ----------------------------------------------------------------------------------------------
def _hits(finding, errors: Sequence[Injected]) -> Injected | None:
    for e in errors:
        if FINDING_OF[e.kind] != finding.kind:
            continue
        if e.kind == "drop" and _iou(finding.box, e.box) >= 0.5:
            return e
        if e.kind == "duplicate" and finding.annotation_id in (e.annotation, e.annotation - 10_000):
            return e
        if e.kind in ("swap", "shift") and finding.annotation_id == e.annotation:
            return e
    return None


def calibrate(samples: Sequence[Sample], anns: Sequence[Sequence[Annotated]], config: LintConfig):
    """As `labeler lint` does: fit the score calibration on the labels under review (here the corrupted ones)."""
    return fit_calibration((a, customer_proposals(s.detections, s.view, min_score=0.0, nms_iou=config.nms_iou,
                                                      same_object_iou=EVERY_LABEL))
                           for s, a in zip(samples, anns))


def evaluate(samples: Sequence[Sample], anns: Sequence[Sequence[Annotated]], injected: Sequence[Injected],
             config: LintConfig, calibrated: bool = True) -> dict:
    by_image: dict[int, list[Injected]] = defaultdict(list)
    for e in injected:
        by_image[e.image].append(e)
    found: set[int] = set()
    findings = Counter()
    true_findings = Counter()
    scores, quality = [], []
    t = time.perf_counter()
    cal = calibrate(samples, anns, config) if calibrated else None
    for i, (s, a) in enumerate(zip(samples, anns)):
        r = lint_image(a, s.detections, s.view, s.width, s.height, config, cal)
        scores.append(r.image_score)
        quality.append(r.cleanlab_quality if r.cleanlab_quality is not None else 1.0)
        for f in r.findings:
            findings[f.kind] += 1
            e = _hits(f, by_image[i])
            if e is not None:
                true_findings[f.kind] += 1
                found.add(id(e))
    lint_s = (time.perf_counter() - t) / max(1, len(samples))
    per_kind = {}
    for kind, fkind in FINDING_OF.items():
        n = sum(e.kind == kind for e in injected)
        hit = sum(e.kind == kind and id(e) in found for e in injected)
        per_kind[kind] = {"injected": n, "found": hit, "findings": findings[fkind], "true": true_findings[fkind]}
    top = max(1, math.ceil(0.1 * len(samples)))
    out = {"images": len(samples), "boxes": sum(len(s.boxes) for s in samples), "per_kind": per_kind,
           "other_findings": {k: v for k, v in findings.items() if k not in FINDING_OF.values()},
           "top_images": top, "lint_ms_per_image": 1000 * lint_s,
           "calibration": cal.to_dict() if cal is not None else None}
    for name, order in (("noisy_or", np.argsort(-np.array(scores), kind="stable")),
                        ("cleanlab", np.argsort(np.array(quality), kind="stable"))):
        chosen = set(order[:top].tolist())
        out[f"top10_{name}"] = _share(injected, chosen)
    out["top10_ceiling"] = _ceiling(injected, top)
    return out


def _share(injected: Sequence[Injected], chosen: set[int]) -> dict:
    res = {}
    for group, kinds in (("misses_and_swaps", ("drop", "swap")), ("all", tuple(RATES))):
        errs = [e for e in injected if e.kind in kinds]
        res[group] = sum(e.image in chosen for e in errs) / len(errs) if errs else None
    return res


def _ceiling(injected: Sequence[Injected], top: int) -> dict:
    res = {}
    for group, kinds in (("misses_and_swaps", ("drop", "swap")), ("all", tuple(RATES))):
        per = Counter(e.image for e in injected if e.kind in kinds)
        total = sum(per.values())
        res[group] = sum(n for _, n in per.most_common(top)) / total if total else None
    return res


def clean_findings(samples: Sequence[Sample], config: LintConfig) -> dict:
    anns = [[Annotated(k, lab, box) for k, (lab, box) in enumerate(s.boxes)] for s in samples]
    cal = calibrate(samples, anns, config)
    c = Counter()
    for s, a in zip(samples, anns):
        c.update(f.kind for f in lint_image(a, s.detections, s.view, s.width, s.height, config, cal).findings)
    return dict(c)


def pool(runs: Sequence[dict]) -> dict:
    """Repeated injection draws on the same images: per-kind counts summed (then precision and recall), the
    top-10 % shares as mean, min and max over the draws."""
    out = {k: v for k, v in runs[0].items() if not k.startswith("top10_") and k not in ("per_kind", "other_findings")}
    out["draws"] = len(runs)
    out["per_kind"] = {}
    for kind in FINDING_OF:
        n, hit, fnd, true = (sum(r["per_kind"][kind][k] for r in runs) for k in ("injected", "found", "findings",
                                                                                 "true"))
        out["per_kind"][kind] = {"injected": n, "found": hit, "recall": hit / n if n else None, "findings": fnd,
                                 "precision": true / fnd if fnd else None}
    out["other_findings"] = dict(sum((Counter(r["other_findings"]) for r in runs), Counter()))
    for key in [k for k in runs[0] if k.startswith("top10_")]:
        out[key] = {}
        for group in ("misses_and_swaps", "all"):
            vals = [r[key][group] for r in runs if r[key][group] is not None]
            out[key][group] = {"mean": float(np.mean(vals)), "min": min(vals), "max": max(vals)} if vals else None
    return out


def contact_sheets(pairs: list[tuple[Sample, np.ndarray]], config: LintConfig, folder: Path, tag: str,
                   per_kind: int = 20, seed: int = 0) -> list[Path]:
    """For checking by eye: a random sample of the findings on the *clean* labels, one PNG per model kind.
    Green: the annotations; blue: the annotation the finding is about; red: the model's box (the finding)."""
    import cv2

    samples = [s for s, _ in pairs]
    anns = [[Annotated(k, lab, box) for k, (lab, box) in enumerate(s.boxes)] for s in samples]
    cal = calibrate(samples, anns, config)
    found = [(f, img, a) for (s, img), a in zip(pairs, anns)
             for f in lint_image(a, s.detections, s.view, s.width, s.height, config, cal).findings]
    rng = np.random.default_rng(seed)
    out = []
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("missed", "wrong_class", "bad_box"):
        mine = [x for x in found if x[0].kind == kind]
        tiles = []
        for i in rng.permutation(len(mine))[:per_kind]:
            f, img, a = mine[i]
            im = img.copy()
            for ann in a:
                color = (0, 0, 255) if ann.id == f.annotation_id else (0, 200, 0)
                cv2.rectangle(im, tuple(map(int, ann.box[:2])), tuple(map(int, ann.box[2:])), color, 2)
            x1, y1, x2, y2 = map(int, f.box)
            cv2.rectangle(im, (x1, y1), (x2, y2), (255, 0, 0), 2)
            cx, cy, r = (x1 + x2) // 2, (y1 + y2) // 2, max(x2 - x1, y2 - y1, 60)
            tile = cv2.resize(im[max(0, cy - r): cy + r, max(0, cx - r): cx + r], (200, 200))
            cv2.putText(tile, f"{f.suggested_label or ''} {f.score:.2f}", (3, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 0, 0), 1)
            tiles.append(tile)
        if not tiles:
            continue
        tiles += [np.full((200, 200, 3), 255, np.uint8)] * (-len(tiles) % 5)
        sheet = np.vstack([np.hstack(tiles[k: k + 5]) for k in range(0, len(tiles), 5)])
        path = folder / f"{tag}-{kind}.png"
        cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        out.append(path)
    return out


def run_dataset(name: str, pairs: list[tuple[Sample, np.ndarray]], model: Path, args) -> dict:
    samples = [s for s, _ in pairs]
    sec = predict(pairs, model, args.threads)
    config = LintConfig(threshold=args.threshold)
    if args.sheets:
        for path in contact_sheets(pairs, config, args.sheets, name.split()[0], seed=args.seed):
            print(f"contact sheet: {path}")
    with_boxes = [i for i, s in enumerate(samples) if s.boxes]
    spread, concentrated, raw, sweep_runs = [], [], [], defaultdict(list)
    for draw in range(args.draws):
        rng = np.random.default_rng([args.seed, draw])
        anns, injected = inject(samples, rng)
        spread.append(evaluate(samples, anns, injected, config))
        raw.append(evaluate(samples, anns, injected, config, calibrated=False))
        for t in args.sweep:
            sweep_runs[t].append(evaluate(samples, anns, injected, LintConfig(threshold=t)))
        chosen = set(rng.choice(with_boxes, size=max(1, math.ceil(0.1 * len(samples))), replace=False).tolist())
        anns_c, injected_c = inject(samples, rng, chosen)
        concentrated.append(evaluate(samples, anns_c, injected_c, config))
    sweep = {str(t): {k: {"precision": v["precision"], "recall": v["recall"]}
                      for k, v in pool(runs)["per_kind"].items()} for t, runs in sweep_runs.items()}
    return {"dataset": name, "model": str(model), "predict_s_per_image": sec, "threshold": config.threshold,
            "clean_findings": clean_findings(samples, config), "spread": pool(spread),
            "concentrated": pool(concentrated), "raw_scores": pool(raw), "sweep": sweep}


# --- report -----------------------------------------------------------------------------------------------
def _p(v) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


def _range(v) -> str:
    return "–" if v is None else f"{100 * v['mean']:.0f} % ({100 * v['min']:.0f}–{100 * v['max']:.0f})"


def print_report(res: dict) -> None:
    s, c = res["spread"], res["concentrated"]
    print(f"\n## {res['dataset']}: {s['images']} images, {s['boxes']} correct boxes; model {res['model']}")
    print(f"predict {1000 * res['predict_s_per_image']:.0f} ms/image, lint {s['lint_ms_per_image']:.1f} ms/image; "
          f"threshold {res['threshold']}; {s['draws']} injection draws pooled")
    print("\n| injected error | injected | found | recall | findings of that kind | precision |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, v in s["per_kind"].items():
        print(f"| {kind} ({FINDING_OF[kind]}) | {v['injected']} | {v['found']} | {_p(v['recall'])} | "
              f"{v['findings']} | {_p(v['precision'])} |")
    raw = res["raw_scores"]["per_kind"]
    print("\nwithout score calibration (raw model scores), precision / recall: " + ", ".join(
        f"{FINDING_OF[k]} {_p(v['precision'])} / {_p(v['recall'])}" for k, v in raw.items()))
    cal = s["calibration"]
    if cal:
        at = ", ".join(f"{x} → {np.interp(x, cal['x'], cal['y']):.2f}" for x in (0.2, 0.3, 0.4, 0.5, 0.6, 0.8))
        print(f"score calibration, first draw ({cal['positives']} matched / {cal['negatives']} unmatched "
              f"predictions): raw {at}")
    other = ", ".join(f"{k} {n}" for k, n in sorted(s["other_findings"].items())) or "none"
    print(f"\nrule findings on the corrupted labels (not injected): {other}")
    clean = ", ".join(f"{k} {n}" for k, n in sorted(res["clean_findings"].items())) or "none"
    print(f"findings on the clean labels (before injection): {clean}")
    print(f"\n| errors in the top 10 % of images ({s['top_images']} images), mean (min–max) over draws "
          "| misses + swaps | all kinds |")
    print("|---|---:|---:|")
    for label, key, d in (("spread over all images: linter ranking (noisy-OR)", "top10_noisy_or", s),
                          ("spread: ranking by cleanlab's image quality", "top10_cleanlab", s),
                          ("spread: best any ranking could do", "top10_ceiling", s),
                          ("in 10 % of the images: linter ranking (noisy-OR)", "top10_noisy_or", c),
                          ("in 10 % of the images: ranking by cleanlab's image quality", "top10_cleanlab", c)):
        print(f"| {label} | {_range(d[key]['misses_and_swaps'])} | {_range(d[key]['all'])} |")
    if res["sweep"]:
        print("\nthreshold sweep (precision / recall):")
        print("| threshold | " + " | ".join(FINDING_OF[k] for k in RATES) + " |")
        print("|---:|" + "---:|" * len(RATES))
        for t, r in res["sweep"].items():
            print(f"| {t} | " + " | ".join(f"{_p(r[k]['precision'])} / {_p(r[k]['recall'])}" for k in RATES) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic-model", type=Path, default=ROOT / "resources" / "models" / "demo")
    ap.add_argument("--synthetic-images", type=int, default=60, help="scenes per demo customer (A, B, C)")
    ap.add_argument("--bccd", type=Path, default=ROOT.parent / "shared" / "data" / "BCCD")
    ap.add_argument("--bccd-work", type=Path, default=Path("/tmp/labeler-bench/lint-bccd"))
    ap.add_argument("--bccd-model", type=Path, default=None, help="default: BCCD_WORK/model when it exists")
    ap.add_argument("--prepare-bccd", action="store_true", help="build the BCCD workspace and print the train command")
    ap.add_argument("--only", choices=("synthetic", "bccd"), default=None)
    ap.add_argument("--threshold", type=float, default=LintConfig.threshold)
    ap.add_argument("--sweep", type=float, nargs="*", default=[0.3, 0.5, 0.7])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=10, help="injection draws on the same images, pooled")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    ap.add_argument("--sheets", type=Path, default=None,
                    help="write contact sheets of findings on the clean labels here, to check them by eye")
    args = ap.parse_args(argv)
    if args.prepare_bccd:
        ws = prepare_bccd(args.bccd, args.bccd_work)
        print(f"BCCD workspace: {ws}\ntrain with:\n  nice .venv/bin/python -m labeler train {ws} --out "
              f"{args.bccd_work / 'model'} --image-size 384 --minutes 45 --half --seed 0 --no-register")
        return 0
    print(f"# bench_lint: {platform.node()} {platform.machine()}, {platform.processor() or 'cpu'}, "
          f"torch threads {args.threads}, seed {args.seed}")
    results = []
    if args.only in (None, "synthetic"):
        if (args.synthetic_model / "model.json").exists():
            results.append(run_dataset("synthetic (customers A, B, C)",
                                       synthetic_samples(args.synthetic_images, args.seed), args.synthetic_model,
                                       args))
            print_report(results[-1])
        else:
            print(f"\nsynthetic: no model at {args.synthetic_model} (the demo model); skipped")
    if args.only in (None, "bccd"):
        model = args.bccd_model or args.bccd_work / "model"
        if (model / "model.json").exists():
            results.append(run_dataset("BCCD (val + test splits)", bccd_samples(args.bccd_work / "ws"), model, args))
            print_report(results[-1])
        else:
            print(f"\nBCCD: no model at {model}; run with --prepare-bccd and train one first; skipped")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Drift: a model's figures per cohort of submitted images, oldest to newest, and where they drop.

`drift_report(ws, predictor, by=..., cohorts=...)` is the one entry point (`labeler drift`, `labeler report`
and bench/bench_continuous.py call it). Cohorts (`by`):

- `"cohorts"`: `cohorts` groups of (nearly) equal size in submit order;
- `"submit-week"`: the ISO week (UTC) in which each image was submitted;
- `"import"`: the `images add` / `import` run that added the image (one timestamp per run).

Each cohort is scored as `labeler eval` scores a split (inference/evaluate.py): on the customers' own boxes,
a project only on the nodes it labels, with pycocotools' matching (IoU 0.5 for mAP50 and recall, .5:.95 for
mAP); recall is counted at `score_threshold`, by default the labeling window's display threshold. Figures
come for the whole cohort, per project and per node. By default only **held-out** images are scored (the val
and test splits): a model remembers its training images, and old cohorts it trained on would look better
than new ones for that reason alone.

**Change and flag.** Each figure's change against the oldest cohort comes with a bootstrap interval: the
images of each cohort are resampled with replacement (within each project, so a cohort keeps its mix),
`bootstrap` times, and the interval is the central share of the resampled differences. A cohort compares
many rows (all, each project, each node) and a chance drop in one of a dozen would otherwise be a false
alarm every few cohorts, so the share is widened for their number (Bonferroni: `1 - (1 - confidence) / rows`;
the cohort as a whole keeps `confidence`). A row is **flagged** when it drops by at least `threshold` *and*
its whole interval lies below zero, so a drop seen on a handful of images (a wide interval that reaches
zero) raises no false alarm, *and* a bootstrap test agrees: drawing both cohorts from their images pooled
(what "nothing changed" means) gives a drop as large in at most the same tail share (`p_value`). The test
guards the one case the interval cannot see: an old cohort on which a node scored perfectly resamples to
the same perfect figure every time, a zero-width interval that makes any chance miss in a newer cohort look
certain. A row also needs at
least `min_flag_images` images in both cohorts: resampling one or two images gives back the same images, an
interval far narrower than the truth. The flagged figure is `metric`: mAP50 (default) or recall at the
display threshold.

AP under resampling is pycocotools' own computation (the 101-point interpolated precision envelope over
the detections ranked by score) with each image counted as often as the resample drew it; with every image
drawn once it equals pycocotools' figure (tests/test_drift.py checks this), so a 500-resample bootstrap is
a few array operations per node instead of 500 COCOeval runs. Qt-free.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from projects.activity import submitted_images
from projects.errors import LabelerError, shorten
from projects.imaging import read_image
from projects.split import SPLITS, split_of
from projects.workspace import Workspace

DISPLAY_THRESHOLD = 0.4  # the labeling window's default confidence threshold (labeler/app/prelabels.py)
BY = ("cohorts", "submit-week", "import")
METRICS = ("mAP50", "recall")
HELD_OUT = ("val", "test")
DEFAULT_COHORTS = 4
DEFAULT_THRESHOLD = 0.05
DEFAULT_CONFIDENCE = 0.95
DEFAULT_BOOTSTRAP = 1000
MIN_FLAG_IMAGES = 10  # below this a resample of a cohort is nearly itself: its interval says nothing
_REC_THRS = np.linspace(0.0, 1.0, 101)  # pycocotools' recall thresholds
_MAX_CELLS = 4_000_000  # resamples x detections handled at once (memory bound of the bootstrap)


class DriftError(LabelerError, ValueError):
    """Drift cannot be measured as asked; the message says why."""


class NothingToScore(DriftError):
    """No submitted image (of the projects and splits asked) to score yet."""


@dataclass
class Figures:
    """One row: a cohort as a whole, one project or one node in it. `low`/`high` bound the flagged metric
    (central `confidence` share of the resamples); `change*` compare it with the oldest cohort (None there, or
    where it is undefined), its interval widened for the number of rows the cohort compares."""

    images: int
    gt: int
    mAP50: float
    mAP: float
    recall: float
    low: float | None = None
    high: float | None = None
    change: float | None = None
    change_low: float | None = None
    change_high: float | None = None
    p_value: float | None = None  # a drop this large or larger, were both cohorts drawn from their pooled images
    flagged: bool = False

    def value(self, metric: str) -> float:
        return self.mAP50 if metric == "mAP50" else self.recall

    def to_dict(self) -> dict[str, Any]:
        return {k: _number(v) for k, v in asdict(self).items()}


@dataclass
class Cohort:
    key: str
    label: str
    first: str  # earliest submit time (import time for `by="import"`) of its images
    last: str
    figures: Figures
    projects: dict[str, Figures] = field(default_factory=dict)
    nodes: dict[str, Figures] = field(default_factory=dict)

    @property
    def flags(self) -> list[str]:
        """What dropped: "all", "project NAME", "node NAME"."""
        out = ["all"] if self.figures.flagged else []
        out += [f"project {p}" for p, f in self.projects.items() if f.flagged]
        return out + [f"node {n}" for n, f in self.nodes.items() if f.flagged]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "first": self.first, "last": self.last,
                **self.figures.to_dict(), "flags": self.flags,
                "projects": {p: f.to_dict() for p, f in self.projects.items()},
                "nodes": {n: f.to_dict() for n, f in self.nodes.items()}}


@dataclass
class DriftReport:
    model: str
    by: str
    metric: str
    threshold: float
    confidence: float
    score_threshold: float
    splits: list[str]
    bootstrap: int
    cohorts: list[Cohort]  # oldest first
    overall: Cohort  # every scored image together (no change figures)
    skipped: list[str] = field(default_factory=list)  # images that could not be read, with the reason
    min_flag_images: int = MIN_FLAG_IMAGES

    @property
    def flagged(self) -> list[str]:
        """Keys of the cohorts with at least one flagged row, oldest first."""
        return [c.key for c in self.cohorts if c.flags]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "by": self.by, "metric": self.metric, "threshold": self.threshold,
                "confidence": self.confidence, "score_threshold": self.score_threshold, "splits": self.splits,
                "bootstrap": self.bootstrap, "min_flag_images": self.min_flag_images, "flagged": self.flagged,
                "cohorts": [c.to_dict() for c in self.cohorts], "overall": self.overall.to_dict(),
                "skipped": self.skipped}


def _number(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


# --- options and cohorts ---------------------------------------------------------------------------
def check_options(by: str, cohorts: int, metric: str, threshold: float, confidence: float, bootstrap: int,
                  splits: Sequence[str], min_images: int) -> None:
    if by not in BY:
        raise DriftError(f"unknown cohort kind {shorten(by)} (one of {', '.join(BY)})")
    if by == "cohorts" and (isinstance(cohorts, bool) or not isinstance(cohorts, int) or cohorts < 1):
        raise DriftError(f"the number of cohorts must be a whole number >= 1, got {shorten(cohorts)}")
    if metric not in METRICS:
        raise DriftError(f"unknown metric {shorten(metric)} (one of {', '.join(METRICS)})")
    if not (isinstance(threshold, int | float) and 0 <= threshold <= 1):
        raise DriftError(f"the drop threshold is a figure in [0, 1], got {shorten(threshold)}")
    if not (isinstance(confidence, int | float) and 0 < confidence < 1):
        raise DriftError(f"the confidence is strictly between 0 and 1, got {shorten(confidence)}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise DriftError(f"the number of bootstrap resamples is a whole number >= 0, got {shorten(bootstrap)}")
    known = [name for name, _ in SPLITS]
    bad = [s for s in splits if s not in known]
    if bad or not splits:
        raise DriftError(f"unknown split {shorten(bad[0]) if bad else 'list (empty)'} (splits: {', '.join(known)})")
    if isinstance(min_images, bool) or not isinstance(min_images, int) or min_images < 1:
        raise DriftError(f"--min-images is a whole number >= 1, got {shorten(min_images)}")


def _week(stamp: str) -> str:
    try:
        year, week, _ = datetime.fromisoformat(stamp).isocalendar()
    except ValueError:
        return "unknown week"
    return f"{year}-W{week:02d}"


def group_cohorts(rows: Sequence[dict[str, Any]], by: str, cohorts: int = DEFAULT_COHORTS,
                  min_images: int = 1) -> list[tuple[str, str, list[int]]]:
    """(key, label, row indices) per cohort, oldest first. `rows` are `submitted_images` rows in submit order.
    A cohort of fewer than `min_images` images is merged into the next one (the last into the one before)."""
    if not rows:
        return []
    if by == "cohorts":
        parts = [p.tolist() for p in np.array_split(np.arange(len(rows)), min(cohorts, len(rows)))]
        groups = [(f"{k + 1}/{len(parts)}", "", p) for k, p in enumerate(parts)]
    else:
        column = "added_at" if by == "import" else "submitted_at"
        keyed: dict[str, list[int]] = {}
        for i in sorted(range(len(rows)), key=lambda i: (rows[i][column] or "", rows[i]["id"])):
            key = (rows[i][column] or "unknown") if by == "import" else _week(rows[i]["submitted_at"] or "")
            keyed.setdefault(key, []).append(i)
        groups = [(k, "", v) for k, v in keyed.items()]
    merged: list[tuple[str, str, list[int]]] = []
    for key, label, members in groups:
        if merged and len(merged[-1][2]) < min_images:
            prev = merged.pop()
            key, members = f"{prev[0]}+{key}", prev[2] + members
        merged.append((key, label, members))
    if len(merged) > 1 and len(merged[-1][2]) < min_images:
        last, prev = merged.pop(), merged.pop()
        merged.append((f"{prev[0]}+{last[0]}", "", prev[2] + last[2]))
    column = "added_at" if by == "import" else "submitted_at"
    out = []
    for key, _, members in merged:
        stamps = sorted(rows[i][column] or "" for i in members)
        projects = sorted({rows[i]["project"] for i in members})
        when = f"{stamps[0][:16].replace('T', ' ')} – {stamps[-1][:16].replace('T', ' ')}"
        label = {"cohorts": f"cohort {key}: submitted {when}", "submit-week": f"week {key}",
                 "import": f"imported {when} ({', '.join(projects)})"}[by]
        out.append((key, label, members))
    return out


# --- scoring: pycocotools' per-image matching, then weighted accumulation -----------------------------
@dataclass
class _Scored:
    """Per-image matching of one model on the scored images (indices into the rows)."""

    nodes: list[str]
    project: np.ndarray  # [n] project index per image
    gt: np.ndarray  # [n, K] ground-truth boxes (not ignored)
    found: np.ndarray  # [n, K] of those, matched at IoU 0.5 by a detection scoring >= score_threshold
    det_img: list[np.ndarray]  # per node: image index of each detection, in pycocotools' ranking
    det_tp: list[np.ndarray]  # per node: [T, D] true positives at each IoU threshold
    det_fp: list[np.ndarray]  # per node: [T, D] false positives


def _score(ws: Workspace, predictor, rows: Sequence[dict[str, Any]], projects: list[str],
           score_threshold: float, batch_size: int, progress: Callable[[int, int], None] | None
           ) -> tuple[_Scored, list[int], list[str]]:
    """Predict every row's image and match it with pycocotools; returns the matching, the indices of the rows
    scored and one reason per image that could not be read."""
    sup = ws.super_taxonomy()
    labeled = {p: ws.project_view(p).labeled_nodes & set(predictor.node_names) for p in projects}
    nodes = [n for n in sup.names if any(n in labeled[p] for p in projects)]
    if not nodes:
        raise DriftError(f"{ws.folder}: model {predictor.version} predicts none of the nodes that "
                         f"{', '.join(projects)} label")
    cat = {n: k + 1 for k, n in enumerate(nodes)}
    images, anns, dets, kept, skipped = [], [], [], [], []
    for start in range(0, len(rows), batch_size):
        batch, arrays = [], []
        for i in range(start, min(start + batch_size, len(rows))):
            try:
                arrays.append(read_image(ws.image_path(rows[i]["path"])))
                batch.append(i)
            except LabelerError as e:
                skipped.append(str(e))
        for i, found in zip(batch, predictor.predict(arrays) if arrays else []):
            r, lab = rows[i], labeled[rows[i]["project"]]
            kept.append(i)
            images.append({"id": i + 1, "width": int(r["width"]), "height": int(r["height"])})
            for a in ws.annotations(r["id"]):
                for n in sup.positives(a["node"]):
                    if n in lab:
                        w, h = a["x2"] - a["x1"], a["y2"] - a["y1"]
                        anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat[n],
                                     "bbox": [a["x1"], a["y1"], w, h], "area": w * h, "iscrowd": 0})
            for d in found:
                if d.node in lab:
                    x1, y1, x2, y2 = (float(v) for v in d.box)
                    dets.append({"image_id": i + 1, "category_id": cat[d.node], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                 "score": float(d.score)})
        if progress:
            progress(min(start + batch_size, len(rows)), len(rows))
    if not kept:
        raise DriftError(f"{ws.folder}: none of the {len(rows)} images could be read ({skipped[0]})")
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": n} for n, c in cat.items()]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if dets:
            coco_dt = coco_gt.loadRes(dets)
        else:  # pycocotools cannot load an empty result list
            coco_dt = COCO()
            coco_dt.dataset = {**gt, "annotations": []}
            coco_dt.createIndex()
        E = COCOeval(coco_gt, coco_dt, "bbox")
        E.params.catIds = list(cat.values())
        E.params.areaRng, E.params.areaRngLbl = [E.params.areaRng[0]], ["all"]
        E.evaluate()
    n, K, T = len(rows), len(nodes), len(E.params.iouThrs)
    project_index = {p: j for j, p in enumerate(projects)}
    out = _Scored(nodes, np.array([project_index[r["project"]] for r in rows]), np.zeros((n, K)), np.zeros((n, K)),
                  [], [], [])
    per_node: list[list[tuple[np.ndarray, ...]]] = [[] for _ in nodes]
    for e in E.evalImgs:  # [category][area (all)][image], images in ascending id = row order
        if e is None:
            continue
        i, k = e["image_id"] - 1, e["category_id"] - 1
        counted = np.asarray(e["gtIgnore"]) == 0
        out.gt[i, k] = counted.sum()
        score_of = dict(zip(e["dtIds"], e["dtScores"]))
        out.found[i, k] = sum(1 for dt, ok in zip(e["gtMatches"][0], counted)
                              if ok and dt and score_of.get(dt, -1.0) >= score_threshold)
        matched, ignored = np.asarray(e["dtMatches"]) > 0, np.asarray(e["dtIgnore"]).astype(bool)
        per_node[k].append((np.full(len(e["dtScores"]), i), np.asarray(e["dtScores"], float),
                            matched & ~ignored, ~matched & ~ignored))
    for parts in per_node:
        if not parts:
            out.det_img.append(np.zeros(0, int))
            out.det_tp.append(np.zeros((T, 0), bool))
            out.det_fp.append(np.zeros((T, 0), bool))
            continue
        img, score = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        order = np.argsort(-score, kind="mergesort")  # pycocotools' ranking (stable, images in id order)
        out.det_img.append(img[order])
        out.det_tp.append(np.concatenate([p[2] for p in parts], axis=1)[:, order])
        out.det_fp.append(np.concatenate([p[3] for p in parts], axis=1)[:, order])
    return out, kept, skipped


def weighted_ap(weights: np.ndarray, det_img: np.ndarray, tp: np.ndarray, fp: np.ndarray,
                npig: np.ndarray) -> np.ndarray:
    """pycocotools' AP of one node for each row of image weights ([B, n]): detections ranked as pycocotools
    ranks them (`det_img`, `tp`, `fp` of length D), each counted `weights[b, image]` times; `npig` [B] is the
    weighted number of ground-truth boxes. NaN where there is no ground truth (pycocotools' -1)."""
    B, D = weights.shape[0], len(det_img)
    out = np.full(B, np.nan)
    rows = np.flatnonzero(npig > 0)
    if D == 0:
        out[rows] = 0.0
        return out
    R = len(_REC_THRS)
    step = max(1, _MAX_CELLS // D)
    for s in range(0, len(rows), step):
        sel = rows[s:s + step]
        n = len(sel)
        wd = weights[sel][:, det_img]
        tps, fps = np.cumsum(wd * tp, axis=1), np.cumsum(wd * fp, axis=1)
        rc = tps / npig[sel, None]
        pr = tps / (fps + tps + np.spacing(1))
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # the precision envelope
        # pycocotools: idx[j] = the first detection whose recall reaches threshold j (searchsorted, side
        # "left"). The same for every row at once, exactly: count the thresholds each recall reaches (an
        # integer, non-decreasing along a row), shift each row into its own integer range, one searchsorted.
        reached = np.searchsorted(_REC_THRS, rc.ravel(), side="right").reshape(n, D) + (R + 1) * np.arange(n)[:, None]
        queries = np.arange(R)[None, :] + (R + 1) * np.arange(n)[:, None]
        idx = np.searchsorted(reached.ravel(), queries.ravel(), side="right").reshape(n, R) - D * np.arange(n)[:, None]
        q = np.where(idx < D, np.take_along_axis(pr, np.minimum(idx, D - 1), axis=1), 0.0)
        out[sel] = q.mean(axis=1)
    return out


def _nanmean(a: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN (pycocotools leaves out nodes without ground truth); NaN if none."""
    ok = ~np.isnan(a)
    n = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, a, 0.0).sum(axis=-1) / np.maximum(n, 1), np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


class _Cohort:
    """The matching restricted to one cohort's images, scored under rows of image weights."""

    def __init__(self, s: _Scored, members: Sequence[int]):
        self.s = s
        self.members = np.asarray(members, int)
        local = np.full(len(s.project), -1)
        local[self.members] = np.arange(len(self.members))
        self.project = s.project[self.members]
        self.ones = np.ones((1, len(self.members)))  # every image once: the point figures
        self.point_cache: dict = {}
        self.gt, self.found = s.gt[self.members], s.found[self.members]
        self.dets = []
        for img, tp, fp in zip(s.det_img, s.det_tp, s.det_fp):
            keep = local[img] >= 0  # a subset of a stable ranking is the ranking of the subset
            self.dets.append((local[img[keep]], tp[:, keep], fp[:, keep]))

    def sizes(self) -> dict[int, int]:
        """Images per project (index) in the cohort."""
        return {int(p): int(n) for p, n in zip(*np.unique(self.project, return_counts=True))}

    def resample(self, rng: np.random.Generator, B: int, sizes: dict[int, int] | None = None) -> np.ndarray:
        """[B, m] weights: each row draws, per project, `sizes[project]` of the cohort's images of that project
        with replacement (default: as many as it has, the ordinary bootstrap)."""
        W = np.zeros((B, len(self.members)))
        rows = np.arange(B)[:, None]
        for p, n in (sizes or self.sizes()).items():
            own = np.flatnonzero(self.project == p)
            if n and len(own):
                np.add.at(W, (rows, own[rng.integers(0, len(own), size=(B, n))]), 1.0)
        return W

    def ap(self, W: np.ndarray, k: int, t: int = 0) -> np.ndarray:
        img, tp, fp = self.dets[k]
        return weighted_ap(W, img, tp[t], fp[t], W @ self.gt[:, k])

    def scope(self, W: np.ndarray, nodes: list[int], project: int | None, iou_all: bool = False,
              cache: dict | None = None) -> dict[str, np.ndarray]:
        """mAP50 (and mAP over IoU .5:.95 when `iou_all`) and recall of some nodes, on one project's images or
        all, for each row of weights. `cache` (one dict per `W`) keeps each node's AP for the next rows."""
        if project is not None and not (self.project == project).all():
            W = W * (self.project == project)
        else:
            project = None  # all the cohort's images are that project's: the same figures
        cache = {} if cache is None else cache

        def ap(k: int, t: int = 0) -> np.ndarray:
            if (project, k, t) not in cache:
                cache[(project, k, t)] = self.ap(W, k, t)
            return cache[(project, k, t)]

        out = {"mAP50": _nanmean(np.stack([ap(k) for k in nodes], axis=-1)) if nodes else np.full(len(W), np.nan),
               "recall": _ratio((W @ self.found[:, nodes]).sum(axis=1), (W @ self.gt[:, nodes]).sum(axis=1))}
        if iou_all:
            T = self.dets[0][1].shape[0] if self.dets else 0
            per = [_nanmean(np.stack([ap(k, t) for t in range(T)], axis=-1)) for k in nodes]
            out["mAP"] = _nanmean(np.stack(per, axis=-1)) if per else np.full(len(W), np.nan)
        return out


def drift_report(ws: Workspace, predictor, by: str = "cohorts", cohorts: int = DEFAULT_COHORTS,
                 projects: Sequence[str] | None = None, splits: Sequence[str] = HELD_OUT, metric: str = "mAP50",
                 threshold: float = DEFAULT_THRESHOLD, confidence: float = DEFAULT_CONFIDENCE,
                 bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, score_threshold: float = DISPLAY_THRESHOLD,
                 min_images: int = 1, min_flag_images: int = MIN_FLAG_IMAGES, batch_size: int = 4,
                 progress: Callable[[int, int], None] | None = None) -> DriftReport:
    """The model's figures per cohort of submitted images, oldest first (see the module docstring).

    `predictor` is an `inference.predictor.Predictor` or anything with `.predict(images)`, `.node_names` and
    `.version`. Raises DriftError (a LabelerError) for bad options or when there is nothing to score."""
    splits = list(splits)
    check_options(by, cohorts, metric, threshold, confidence, bootstrap, splits, min_images)
    if not (isinstance(score_threshold, int | float) and 0 <= score_threshold <= 1):
        raise DriftError(f"the score threshold is a figure in [0, 1], got {shorten(score_threshold)}")
    names = list(projects) if projects else ws.project_names()
    rows = [r for r in submitted_images(ws, names) if split_of(int(r["split_bucket"])) in splits]
    if not rows:
        raise NothingToScore(f"{ws.folder}: no submitted images in the {'/'.join(splits)} split of "
                         f"{', '.join(names) or 'any project'}; drift needs labelled images the model did not "
                         f"train on (or pass --split all)")
    scored, kept, skipped = _score(ws, predictor, rows, names, score_threshold, batch_size, progress)
    kept_rows = [rows[i] for i in kept]
    groups = [(key, label, [kept[j] for j in members])
              for key, label, members in group_cohorts(kept_rows, by, cohorts, min_images)]
    nodes = scored.nodes
    labeled = {p: ws.project_view(p).labeled_nodes for p in names}
    scopes: list[tuple[str, str | None, list[int], int | None]] = [("all", None, list(range(len(nodes))), None)]
    scopes += [("project", p, [k for k, n in enumerate(nodes) if n in labeled[p]], j) for j, p in enumerate(names)]
    scopes += [("node", n, [k], None) for k, n in enumerate(nodes)]

    def figures(c: _Cohort, kind: str, nodes_in: list[int], project: int | None) -> Figures:
        point = c.scope(c.ones, nodes_in, project, iou_all=True, cache=c.point_cache)
        if kind == "node":  # the images of the projects that label it
            mask = np.isin(c.project, [j for j, p in enumerate(names) if nodes[nodes_in[0]] in labeled[p]])
        else:
            mask = np.ones(len(c.members), bool) if project is None else c.project == project
        return Figures(images=int(mask.sum()), gt=int(c.gt[mask][:, nodes_in].sum()),
                       mAP50=float(point["mAP50"][0]), mAP=float(point["mAP"][0]), recall=float(point["recall"][0]))

    built: list[Cohort] = []
    samples: list[dict[tuple[str, str | None], np.ndarray]] = []
    scope_of = {(kind, name): (nodes_in, project) for kind, name, nodes_in, project in scopes}
    for ci, (key, label, members) in enumerate(groups):
        c = _Cohort(scored, members)
        W = c.resample(np.random.default_rng([seed, ci]), bootstrap) if bootstrap else None
        w_cache: dict = {}
        cohort = Cohort(key, label, *_span(rows, members, by), figures=figures(c, "all", scopes[0][2], None))
        stats: dict[tuple[str, str | None], np.ndarray] = {}
        for kind, name, nodes_in, project in scopes:
            f = cohort.figures if kind == "all" else figures(c, kind, nodes_in, project)
            if kind == "project":
                if f.images == 0:
                    continue
                cohort.projects[name] = f
            elif kind == "node":
                if f.images == 0:
                    continue
                cohort.nodes[name] = f
            if W is not None:
                stats[(kind, name)] = c.scope(W, nodes_in, project, cache=w_cache)[metric]
                f.low, f.high = _interval(stats[(kind, name)], confidence)
        built.append(cohort)
        samples.append(stats)
    for ci, (cohort, stats) in enumerate(zip(built[1:], samples[1:]), start=1):
        compared = {key: f for key, f in _rows(cohort).items() if key in _rows(built[0])}
        row_confidence = 1 - (1 - confidence) / max(1, len(compared))  # Bonferroni over the cohort's rows
        if bootstrap:  # the null: both cohorts drawn from their images pooled (per project, at their sizes)
            pooled = _Cohort(scored, groups[0][2] + groups[ci][2])
            rng = np.random.default_rng([seed, ci, 1])
            first, this = _Cohort(scored, groups[0][2]).sizes(), _Cohort(scored, groups[ci][2]).sizes()
            # enough draws that a p-value as small as the Bonferroni tail can be seen at all
            draws = max(bootstrap, math.ceil(4 / (1 - row_confidence)))
            W0, Wc = pooled.resample(rng, draws, first), pooled.resample(rng, draws, this)
            c0_cache, cc_cache = {}, {}
        for (kind, name), f in compared.items():
            base = _rows(built[0])[(kind, name)]
            change = f.value(metric) - base.value(metric)
            f.change = None if math.isnan(change) else change
            if (kind, name) in stats and (kind, name) in samples[0]:
                f.change_low, f.change_high = _interval(stats[(kind, name)] - samples[0][(kind, name)],
                                                        row_confidence)
            if bootstrap and f.change is not None:
                nodes_in, project = scope_of[(kind, name)]
                null = (pooled.scope(Wc, nodes_in, project, cache=cc_cache)[metric]
                        - pooled.scope(W0, nodes_in, project, cache=c0_cache)[metric])
                null = null[~np.isnan(null)]
                f.p_value = float((1 + (null <= f.change + 1e-12).sum()) / (1 + len(null))) if len(null) else None
            f.flagged = bool(f.change is not None and f.change <= -threshold and f.change_high is not None
                             and f.change_high < 0 and f.p_value is not None and f.p_value <= (1 - row_confidence) / 2
                             and min(f.images, base.images) >= min_flag_images)
    everything = _Cohort(scored, kept)
    overall = Cohort("all", "every scored image", *_span(rows, kept, by),
                     figures=figures(everything, "all", scopes[0][2], None))
    for kind, name, nodes_in, project in scopes[1:]:
        f = figures(everything, kind, nodes_in, project)
        if f.images:
            (overall.projects if kind == "project" else overall.nodes)[name] = f
    return DriftReport(model=str(predictor.version), by=by, metric=metric, threshold=float(threshold),
                       confidence=float(confidence), score_threshold=float(score_threshold), splits=splits,
                       bootstrap=bootstrap, cohorts=built, overall=overall, skipped=skipped,
                       min_flag_images=min_flag_images)


def _rows(c: Cohort) -> dict[tuple[str, str | None], Figures]:
    return {("all", None): c.figures, **{("project", p): f for p, f in c.projects.items()},
            **{("node", n): f for n, f in c.nodes.items()}}


def _span(rows: Sequence[dict[str, Any]], members: Sequence[int], by: str) -> tuple[str, str]:
    column = "added_at" if by == "import" else "submitted_at"
    stamps = sorted(rows[i][column] or "" for i in members)
    return stamps[0], stamps[-1]


def _interval(values: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """The central `confidence` share of the resampled values; None when too many resamples are undefined
    (a node whose few boxes most resamples miss)."""
    ok = values[~np.isnan(values)]
    if not len(values) or len(ok) < confidence * len(values):
        return None, None
    lo, hi = np.percentile(ok, [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2])
    return float(lo), float(hi)

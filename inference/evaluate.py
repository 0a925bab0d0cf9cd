"""Evaluation with pycocotools (no hand-written AP): mAP@0.5, mAP@[.5:.95], per node, per project, and
recall at a fixed score.

Three entry points:
- `coco_evaluate(gt, dets)`: a COCO ground-truth dict and a results list, the figures pycocotools gives
  (`labeler eval --gt GT.json --dets DETS.json`);
- `evaluate_workspace(ws, predictor, split)`: the customers' own boxes on a split. A project is scored
  only on the nodes it labels: its images carry ground truth (its boxes, mapped to their nodes and
  ancestors) and keep detections only for those nodes, so a node it does not label never counts as a
  false positive on its images;
- `evaluate_ground_truth(ws, predictor, truth)`: full ground truth in nodes (the demo's
  `ground_truth.json`, the benchmarks' fully labelled test split), every object a positive of its node
  and its ancestors.

Recall at a score is read from pycocotools' own matching at IoU 0.5: a ground-truth box counts as found
when the detection pycocotools matched to it scores at least the threshold (matching is greedy by
score, so this equals matching only the detections above the threshold).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from projects.errors import LabelerError, shorten
from projects.imaging import read_image
from projects.split import split_of
from projects.taxonomy import SuperTaxonomy
from projects.workspace import Workspace

DEFAULT_SCORE = 0.3
# pycocotools' 12 summary figures (COCOeval.stats, in its order), by the names detectron2 and papers use:
# AP over IoU .50:.95 / at .50 / at .75 / on small, medium, large objects; AR with at most 1, 10, 100
# detections per image, and AR (100 detections) on small, medium, large objects.
AT_PRECISION = (0.9,)  # recall at these precisions, per class (recall_at_p90)
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class EvalError(LabelerError, ValueError):
    """Evaluation input is unusable; the message names the file and what is wrong."""


@dataclass
class EvalResult:
    map50: float
    map: float
    recall: float  # at `score_threshold`, IoU 0.5, over all evaluated categories
    score_threshold: float
    per_category: dict[str, dict[str, float]]  # name -> ap50, ap, recall, gt
    images: int
    gt_boxes: int
    per_project: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds_per_image: float | None = None
    coco: dict[str, float | None] = field(default_factory=dict)  # COCO_STATS -> figure (None: nothing to score)
    # How tight the boxes are, apart from whether they are found: over ground-truth boxes matched at IoU 0.5 by a
    # detection scoring >= score_threshold, the IoU of that match (matched, iou>=0.9, iou>=0.95, median_iou)
    localisation: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out = {"mAP50": self.map50, "mAP": self.map, "recall": self.recall, "score_threshold": self.score_threshold,
               "images": self.images, "gt_boxes": self.gt_boxes, "coco": self.coco, "per_node": self.per_category,
               "localisation": self.localisation}
        if self.per_project:
            out["per_project"] = self.per_project
        if self.seconds_per_image is not None:
            out["seconds_per_image"] = self.seconds_per_image
        return out

    def subset(self, names: Iterable[str]) -> dict[str, float]:
        """Mean AP50, AP and pooled recall over some categories (e.g. the partially labelled ones)."""
        rows = [self.per_category[n] for n in names if n in self.per_category and self.per_category[n]["gt"] > 0]
        if not rows:
            return {"mAP50": float("nan"), "mAP": float("nan"), "recall": float("nan"), "gt": 0}
        gt = sum(r["gt"] for r in rows)
        found = sum(r["recall"] * r["gt"] for r in rows)
        return {"mAP50": float(np.mean([r["ap50"] for r in rows])), "mAP": float(np.mean([r["ap"] for r in rows])),
                "recall": found / gt, "gt": gt}


def _check_gt(gt: Any, where: str) -> dict[str, Any]:
    if not isinstance(gt, dict):
        raise EvalError(f"{where}: a COCO ground truth is a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise EvalError(f"{where}: missing the {key!r} list")
    for i, a in enumerate(gt["annotations"]):
        if not isinstance(a, dict) or not {"id", "image_id", "category_id", "bbox"} <= set(a):
            raise EvalError(f"{where}: annotations[{i}] needs id, image_id, category_id and bbox")
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2]) * float(a["bbox"][3]))
    return gt


def _check_dets(dets: Any, image_ids: set[int], where: str) -> list[dict[str, Any]]:
    if not isinstance(dets, list):
        raise EvalError(f"{where}: a COCO results file is a JSON list of detections")
    for i, d in enumerate(dets):
        if not isinstance(d, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(d):
            raise EvalError(f"{where}: [{i}] needs image_id, category_id, bbox and score")
        if d["image_id"] not in image_ids:
            raise EvalError(f"{where}: [{i}] refers to image_id {d['image_id']}, which the ground truth lacks")
    return dets


def coco_evaluate(gt: dict[str, Any], dets: list[dict[str, Any]], score_threshold: float = DEFAULT_SCORE,
                  category_ids: Sequence[int] | None = None, where: str = "<memory>") -> EvalResult:
    """pycocotools' bbox evaluation; mAP figures are its `stats[1]` and `stats[0]`."""
    gt = _check_gt(json.loads(json.dumps(gt)), where)
    dets = _check_dets(json.loads(json.dumps(dets)), {im["id"] for im in gt["images"]}, where)
    names = {c["id"]: str(c.get("name", c["id"])) for c in gt["categories"]}
    cats = list(category_ids) if category_ids is not None else sorted(names)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets) if dets else None
        if coco_dt is None:  # pycocotools cannot load an empty result list: nothing found, AP 0
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            coco_dt.createIndex()
        E = COCOeval(coco_gt, coco_dt, "bbox")
        E.params.catIds = cats
        E.evaluate()
        E.accumulate()
        E.summarize()
    precision = E.eval["precision"]  # [T, R, K, A, M]
    found: dict[int, int] = {c: 0 for c in cats}
    total: dict[int, int] = {c: 0 for c in cats}
    ious: list[float] = []
    all_range = list(E.params.areaRng[0])
    for e in E.evalImgs:
        if e is None or list(e["aRng"]) != all_range:
            continue
        c = e["category_id"]
        scores = dict(zip(e["dtIds"], e["dtScores"]))
        for j, ignore in enumerate(e["gtIgnore"]):
            if ignore:
                continue
            total[c] += 1
            dt = int(e["gtMatches"][0, j])
            if dt and scores.get(dt, -1.0) >= score_threshold:
                found[c] += 1
                ious.append(_iou_xywh(coco_gt.anns[e["gtIds"][j]]["bbox"], coco_dt.anns[dt]["bbox"]))
    per: dict[str, dict[str, float]] = {}
    for k, c in enumerate(cats):
        p_all = precision[:, :, k, 0, -1]
        p50 = precision[0, :, k, 0, -1]
        per[names.get(c, str(c))] = {
            "ap50": float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else float("nan"),
            "ap": float(np.mean(p_all[p_all > -1])) if (p_all > -1).any() else float("nan"),
            "recall": found[c] / total[c] if total[c] else float("nan"), "gt": total[c],
            **{f"recall_at_p{int(100 * q)}": _recall_at_precision(p50, E.params.recThrs, q) for q in AT_PRECISION}}
    n_gt = sum(total.values())
    return EvalResult(map50=float(E.stats[1]), map=float(E.stats[0]),
                      recall=sum(found.values()) / n_gt if n_gt else float("nan"), score_threshold=score_threshold,
                      per_category=per, images=len(gt["images"]), gt_boxes=n_gt,
                      coco={k: float(v) if v > -1 else None for k, v in zip(COCO_STATS, E.stats)},
                      localisation=_localisation(ious))


def _iou_xywh(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _recall_at_precision(p50: np.ndarray, recall_thresholds: np.ndarray, q: float) -> float:
    """The highest recall at which the (interpolated) precision at IoU 0.5 is still >= q; threshold-free, so a
    model is judged as if each class had its own best threshold. NaN when the class has no ground truth."""
    if not (p50 > -1).any():
        return float("nan")
    ok = p50 >= q
    return float(recall_thresholds[ok].max()) if ok.any() else 0.0


def _localisation(ious: list[float]) -> dict[str, float]:
    if not ious:
        return {"matched": 0, "iou>=0.9": float("nan"), "iou>=0.95": float("nan"), "median_iou": float("nan")}
    a = np.asarray(ious)
    return {"matched": int(a.size), "iou>=0.9": float((a >= 0.9).mean()), "iou>=0.95": float((a >= 0.95).mean()),
            "median_iou": float(np.median(a))}


def evaluate_files(gt_path: str | Path, dets_path: str | Path, score_threshold: float = DEFAULT_SCORE) -> EvalResult:
    """`dets_path` is a COCO results list, or a COCO dataset file whose annotations carry scores (what
    detection tools and our own converters write); the latter is matched to the ground truth by file name
    and category name."""
    gt = _read_json(gt_path)
    dets = _read_json(dets_path)
    _check_gt(gt, str(gt_path))
    if isinstance(dets, dict):
        dets = dataset_detections(dets, gt, str(dets_path))
    return coco_evaluate(gt, _check_dets(dets, {im["id"] for im in gt["images"]}, str(dets_path)), score_threshold,
                         where=str(gt_path))


def dataset_detections(data: dict[str, Any], gt: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """A COCO dataset file of detections as a results list in the ground truth's image and category ids.

    Its images are matched to the ground truth's by `file_name` (then by the bare file name) when both
    name their files, else by id; its categories by name when both name them, else by id. Every
    annotation must carry a `score`: without one it is ground truth, not a detection.
    """
    anns = data.get("annotations")
    if not isinstance(anns, list):
        raise EvalError(f"{where}: a detections file is a COCO results list, or a COCO dataset with an "
                        f"'annotations' list whose entries carry a score")
    maps = {"image_id": _by_name(data.get("images"), gt["images"], "file_name"),
            "category_id": _by_name(data.get("categories"), gt["categories"], "name")}
    out = []
    for i, a in enumerate(anns):
        if not isinstance(a, dict) or not {"image_id", "category_id", "bbox"} <= set(a):
            raise EvalError(f"{where}: annotations[{i}] needs image_id, category_id and bbox")
        score = a.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise EvalError(f"{where}: annotations[{i}] has no score: a dataset file of detections needs a "
                            f"'score' on every annotation")
        det = {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": float(score)}
        for key, named in maps.items():
            if named is None:  # not named on both sides: ids are taken as they are
                continue
            mapping, names = named
            value = det[key]
            if value not in mapping:
                what = "image" if key == "image_id" else "category"
                why = (f"{what} {shorten(names[value])} is not in the ground truth" if value in names else
                       f"its {what} list has no id {shorten(value)}")
                raise EvalError(f"{where}: annotations[{i}].{key}: {why}")
            det[key] = mapping[value]
        out.append(det)
    return out


def _by_name(items: Any, gt_items: list, key: str) -> tuple[dict[Any, Any], dict[Any, str]] | None:
    """(detection-file id -> ground-truth id for the entries whose `key` (file_name, name) the ground truth
    has, detection-file id -> name); None when either side does not name all its entries."""
    if not isinstance(items, list) or not all(isinstance(d, dict) and isinstance(d.get(key), str) and "id" in d
                                              for d in [*items, *gt_items]):
        return None
    exact = {d[key]: d["id"] for d in gt_items}
    bare: dict[str, list] = {}
    if key == "file_name":
        for d in gt_items:
            bare.setdefault(PurePosixPath(d[key].replace("\\", "/")).name, []).append(d["id"])
    mapping, names = {}, {}
    for d in items:
        names[d["id"]] = d[key]
        same = [exact[d[key]]] if d[key] in exact else bare.get(PurePosixPath(d[key].replace("\\", "/")).name, [])
        if len(same) == 1:
            mapping[d["id"]] = same[0]
    return mapping, names


def _read_json(path: str | Path) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise EvalError(f"{p}: file not found") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvalError(f"{p}: not readable JSON ({e})") from e


# --- building COCO data from a workspace ---------------------------------------------------------
class _Builder:
    """Accumulates COCO images, ground truth and detections with node names as categories."""

    def __init__(self, nodes: Sequence[str]):
        self.nodes = list(nodes)
        self.cat = {n: i + 1 for i, n in enumerate(self.nodes)}
        self.images: list[dict] = []
        self.anns: list[dict] = []
        self.dets: list[dict] = []

    def image(self, image_id: int, w: int, h: int) -> None:
        self.images.append({"id": image_id, "width": w, "height": h})

    def gt(self, image_id: int, node: str, box: Sequence[float]) -> None:
        x1, y1, x2, y2 = (float(v) for v in box)
        self.anns.append({"id": len(self.anns) + 1, "image_id": image_id, "category_id": self.cat[node],
                          "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})

    def det(self, image_id: int, node: str, box: Sequence[float], score: float) -> None:
        x1, y1, x2, y2 = (float(v) for v in box)
        self.dets.append({"image_id": image_id, "category_id": self.cat[node], "bbox": [x1, y1, x2 - x1, y2 - y1],
                          "score": float(score)})

    def gt_dict(self) -> dict[str, Any]:
        return {"images": self.images, "annotations": self.anns,
                "categories": [{"id": i, "name": n} for n, i in self.cat.items()]}

    def evaluate(self, score_threshold: float, image_ids: set[int] | None = None,
                 nodes: Iterable[str] | None = None) -> EvalResult:
        gt = self.gt_dict()
        dets = self.dets
        if image_ids is not None:
            gt = {**gt, "images": [im for im in gt["images"] if im["id"] in image_ids],
                  "annotations": [a for a in gt["annotations"] if a["image_id"] in image_ids]}
            dets = [d for d in dets if d["image_id"] in image_ids]
        cats = None if nodes is None else [self.cat[n] for n in self.nodes if n in set(nodes)]
        return coco_evaluate(gt, dets, score_threshold, category_ids=cats)


def _predict_all(predictor, paths: list[Path], batch_size: int = 4) -> tuple[list[list], float]:
    out, seconds = [], 0.0
    for i in range(0, len(paths), batch_size):
        images = [read_image(p) for p in paths[i:i + batch_size]]
        t = time.perf_counter()
        out.extend(predictor.predict(images))
        seconds += time.perf_counter() - t
    return out, seconds / max(len(paths), 1)


def evaluate_workspace(ws: Workspace, predictor, split: str = "test", projects: Sequence[str] | None = None,
                       score_threshold: float = DEFAULT_SCORE) -> EvalResult:
    """Score on the customers' own boxes of submitted images in `split` (see the module docstring)."""
    sup = ws.super_taxonomy()
    names = list(projects) if projects else ws.project_names()
    labeled = {p: ws.project_view(p).labeled_nodes & set(predictor.node_names) for p in names}
    nodes = [n for n in sup.names if any(n in labeled[p] for p in names)]
    b = _Builder(nodes)
    rows: list[tuple[int, str, Path]] = []
    for p in names:
        for image_id in ws.image_ids(p, status="submitted"):
            row = ws.image(image_id)
            if split_of(int(row["split_bucket"])) != split:
                continue
            rows.append((image_id, p, ws.image_path(row["path"])))
            b.image(image_id, int(row["width"]), int(row["height"]))
            for a in ws.annotations(image_id):
                for n in sup.positives(a["node"]):
                    if n in labeled[p]:
                        b.gt(image_id, n, (a["x1"], a["y1"], a["x2"], a["y2"]))
    if not rows:
        raise EvalError(f"{ws.folder}: no submitted images in the {split!r} split of {', '.join(names)}")
    dets, spi = _predict_all(predictor, [r[2] for r in rows])
    for (image_id, p, _), image_dets in zip(rows, dets):
        for d in image_dets:
            if d.node in labeled[p]:
                b.det(image_id, d.node, d.box, d.score)
    result = b.evaluate(score_threshold)
    for p in names:
        ids = {r[0] for r in rows if r[1] == p}
        if ids and labeled[p]:
            r = b.evaluate(score_threshold, ids, labeled[p])
            result.per_project[p] = {"mAP50": r.map50, "mAP": r.map, "recall": r.recall, "images": r.images,
                                     "nodes": [n for n in sup.names if n in labeled[p]]}
    result.seconds_per_image = spi
    return result


def score_detections(ws: Workspace, detections: Mapping[int, Sequence[Any]], node_names: Sequence[str],
                     projects: Sequence[str] | None = None, score_threshold: float = DEFAULT_SCORE,
                     subsets: Mapping[str, Collection[int]] | None = None) -> tuple[EvalResult, dict[str, dict]]:
    """Score detections already made (image id -> detections with .node .box .score) on the customers' own
    boxes of those images, exactly as `evaluate_workspace` scores a predictor, plus the figures of named
    subsets of the images (cohorts). Used by the follow trainer's gate, which scores the candidate and the
    current model on one frozen set without predicting the current model's images twice."""
    sup = ws.super_taxonomy()
    names = list(projects) if projects else ws.project_names()
    labeled = {p: ws.project_view(p).labeled_nodes & set(node_names) for p in names}
    b = _Builder([n for n in sup.names if any(n in labeled[p] for p in names)])
    project_of = {ws.project_id(p): p for p in names}
    for image_id in sorted(detections):
        row = ws.image(image_id)
        p = project_of.get(row["project_id"])
        if p is None:
            continue
        b.image(image_id, int(row["width"]), int(row["height"]))
        for a in ws.annotations(image_id):
            for n in sup.positives(a["node"]):
                if n in labeled[p]:
                    b.gt(image_id, n, (a["x1"], a["y1"], a["x2"], a["y2"]))
        for d in detections[image_id]:
            if d.node in labeled[p]:
                b.det(image_id, d.node, d.box, d.score)
    if not b.images:
        raise EvalError(f"{ws.folder}: no image of {', '.join(names)} to score")
    result = b.evaluate(score_threshold)
    parts: dict[str, dict] = {}
    for name, ids in (subsets or {}).items():
        ids = {int(i) for i in ids} & {im["id"] for im in b.images}
        if ids:
            r = b.evaluate(score_threshold, ids)
            parts[name] = {"mAP50": r.map50, "mAP": r.map, "recall": r.recall, "images": r.images,
                           "gt_boxes": r.gt_boxes}
    return result, parts


def truth_nodes(sup: SuperTaxonomy, objects: Iterable[dict[str, Any]], nodes: set[str]) -> list[tuple[str, list]]:
    return [(n, o["box"]) for o in objects for n in sup.positives(o["node"]) if n in nodes]


def evaluate_ground_truth(ws: Workspace, predictor, truth: str | Path | dict[str, Any], split: str = "test",
                          nodes: Sequence[str] | None = None, score_threshold: float = DEFAULT_SCORE,
                          box_key: str = "box", per_project: bool = False) -> EvalResult:
    """Score on full ground truth in super-taxonomy nodes for every image of the split (any status).

    `truth` is `{"images": {stored_path: [{"node": n, "box": [x1, y1, x2, y2]}, ...]}}` (the demo's
    ground_truth.json). `nodes` defaults to the nodes some project labels (the ones a model can learn).
    `per_project` adds each project's figures on its own images, per node (used to measure recall on the
    objects a customer does not label)."""
    data = _read_json(truth) if not isinstance(truth, dict) else truth
    where = str(truth) if not isinstance(truth, dict) else "<ground truth>"
    if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
        raise EvalError(f"{where}: expected {{'images': {{path: [objects]}}}}")
    sup = ws.super_taxonomy()
    if nodes is None:
        nodes = [n for n in sup.names if any(n in ws.project_view(p).labeled_nodes for p in ws.project_names())]
    node_set = set(nodes) & set(predictor.node_names)
    b = _Builder([n for n in sup.names if n in node_set])
    rows: list[tuple[int, Path]] = []
    project_of: dict[int, str] = {}
    for p in ws.project_names():
        for image_id in ws.image_ids(p):
            row = ws.image(image_id)
            if split_of(int(row["split_bucket"])) != split or row["path"] not in data["images"]:
                continue
            rows.append((image_id, ws.image_path(row["path"])))
            project_of[image_id] = p
            b.image(image_id, int(row["width"]), int(row["height"]))
            objects = data["images"][row["path"]]
            if not isinstance(objects, list):
                raise EvalError(f"{where}: {row['path']}: expected a list of objects, got {shorten(objects)}")
            for i, o in enumerate(objects):
                if not isinstance(o, dict) or not isinstance(o.get("node"), str) or o["node"] not in sup:
                    raise EvalError(f"{where}: {row['path']} object {i}: unknown node {shorten(o)}")
                box = o.get(box_key, o.get("box"))
                if not (isinstance(box, list | tuple) and len(box) == 4 and all(
                        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
                    raise EvalError(f"{where}: {row['path']} object {i}: {box_key} must be four numbers "
                                    f"x1, y1, x2, y2, got {shorten(box)}")
                for n in sup.positives(o["node"]):
                    if n in node_set:
                        b.gt(image_id, n, box)
    if not rows:
        raise EvalError(f"{where}: no image of the {split!r} split of {ws.folder} has ground truth here")
    dets, spi = _predict_all(predictor, [r[1] for r in rows])
    for (image_id, _), image_dets in zip(rows, dets):
        for d in image_dets:
            if d.node in node_set:
                b.det(image_id, d.node, d.box, d.score)
    result = b.evaluate(score_threshold)
    if per_project:
        for p in ws.project_names():
            ids = {i for i, q in project_of.items() if q == p}
            if ids:
                r = b.evaluate(score_threshold, ids)
                result.per_project[p] = {"mAP50": r.map50, "mAP": r.map, "recall": r.recall, "images": r.images,
                                         "per_node": r.per_category}
    result.seconds_per_image = spi
    return result

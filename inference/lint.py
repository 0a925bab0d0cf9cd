"""ML linters: the model checks the annotator's work before it reaches a customer.

For one image, the annotations are compared with the model's predictions *in the project's taxonomy*:
each detection is mapped through `ProjectView.label_for` and dropped when the project has no label for it
(a people-only customer's unboxed cars are not errors), then de-duplicated per label
(`inference.prelabels.customer_proposals`). From there:

* **missed**: a confident prediction that no annotation covers (cleanlab's overlooked score);
* **wrong_class**: a confident prediction of another label sits on the box (cleanlab's swap score),
  weighed by how much more the model believes the other label than the annotated one;
* **bad_box**: the best same-label prediction disagrees on the box: loose or shifted (cleanlab's
  badly-located score), weighed by the prediction's confidence;
* rules (`inference.lint_rules`): duplicate, zero_area, out_of_image, tiny, unknown_label.

The model's raw scores are first calibrated into the chance that a prediction is a real object, on the
project's own labeled images (`inference.lint_calibration`), so that the thresholds mean the same for a
shy model and a bold one. Every finding has a score in [0, 1]; those at or above `LintConfig.threshold`
are reported. An image's
error score, which ranks images, is the chance that at least one candidate is a real mistake,
1 - prod(1 - score), over all candidates (also those under the threshold). Findings are stored per model
version; on a re-lint, open findings are replaced and those the annotator dismissed are not raised again.
Qt-free: the CLI (`labeler lint`), the window's submit check and the benchmark share it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from inference.lint_calibration import ScoreCalibration, fit_calibration
from inference.lint_cleanlab import BoxQualities, box_qualities
from inference.lint_rules import check_rules, find_duplicates
from inference.lint_types import KINDS, Annotated, Finding, LintConfig, Proposal
from inference.prelabels import customer_proposals
from projects.errors import LabelerError
from projects.taxonomy import ProjectView
from projects.workspace import Workspace

# The linter weighs the model's belief in the annotated label against every other label on the same box, so it
# keeps one proposal per label there (the window shows one proposal per object: prelabels' same_object_iou).
EVERY_LABEL = float("inf")

__all__ = ["KINDS", "Finding", "LintConfig", "LintError", "LintResult", "ScoreCalibration", "lint_image",
           "lint_project", "lint_stored_image", "project_calibration", "project_proposals"]

Progress = Callable[[str, int, int], None]  # stage ("predict" or "lint"), done, total


class LintError(LabelerError, RuntimeError):
    """The lint cannot run (e.g. the model cannot be loaded); the message says why."""


@dataclass(frozen=True)
class LintResult:
    findings: list[Finding]  # at or above the threshold, worst first
    candidates: list[Finding]  # everything found, worst first
    image_score: float  # 1 - prod(1 - score) over the candidates
    cleanlab_quality: float | None  # cleanlab's own image quality (None without a model)


def project_proposals(detections: Sequence[Any] | None, view: ProjectView, config: LintConfig = LintConfig(),
                      calibration: Callable[[float], float] | None = None) -> list[Proposal]:
    """The model's detections in the project's labels (unlabeled classes dropped, NMS per label), with
    calibrated scores when a calibration is given, down to `config.min_prediction_score`."""
    if not detections:
        return []
    if calibration is None:
        return customer_proposals(detections, view, min_score=config.min_prediction_score, nms_iou=config.nms_iou,
                                  same_object_iou=EVERY_LABEL)
    props = [replace(p, score=calibration(p.score))
             for p in customer_proposals(detections, view, min_score=0.0, nms_iou=config.nms_iou,
                                         same_object_iou=EVERY_LABEL)]
    return [p for p in props if p.score >= config.min_prediction_score]


def lint_image(annotations: Iterable[Annotated | Mapping[str, Any]], detections: Sequence[Any] | None,
               view: ProjectView, width: int, height: int, config: LintConfig = LintConfig(),
               calibration: Callable[[float], float] | None = None) -> LintResult:
    """Lint one image. `annotations`: Annotated or workspace rows (id, label, x1..y2); `detections`: the
    model's, in super-taxonomy nodes (`projects.values.Detection` or prediction rows), or None for rules only;
    `calibration` maps the model's raw scores to probabilities (`inference.lint_calibration`)."""
    anns = [a if isinstance(a, Annotated) else Annotated.from_row(a) for a in annotations]
    labels = [lab.name for lab in view.taxonomy.labels]
    rules = check_rules(anns, labels, width, height, config, view.taxonomy.rules.get("min_box_px"))
    proposals = project_proposals(detections, view, config, calibration)
    candidates = [*rules.findings, *find_duplicates(rules.usable, proposals, config)]
    quality = None
    if detections is not None:
        model_findings, quality = _model_findings(rules.usable, proposals, labels, config)
        candidates += model_findings
    candidates = sorted((f for f in candidates if f.score >= config.candidate_floor), key=lambda f: -f.score)
    image_score = 1.0 - math.prod(1.0 - min(1.0, max(0.0, f.score)) for f in candidates)
    return LintResult([f for f in candidates if f.score >= config.threshold], candidates, image_score, quality)


def _model_findings(anns: Sequence[Annotated], props: Sequence[Proposal], labels: Sequence[str],
                    config: LintConfig) -> tuple[list[Finding], float]:
    index = {name: i for i, name in enumerate(labels)}
    lab_b = np.array([a.box for a in anns], dtype=np.float64).reshape(-1, 4)
    lab_c = np.array([index[a.label] for a in anns], dtype=np.int64)
    pred_b = np.array([p.box for p in props], dtype=np.float64).reshape(-1, 4)
    pred_c = np.array([index[p.label] for p in props], dtype=np.int64)
    pred_p = np.array([p.score for p in props], dtype=np.float64)
    q = box_qualities(lab_b, lab_c, pred_b, pred_c, pred_p, missed_min_score=config.missed_min_score,
                      swap_min_score=config.swap_min_score, badloc_min_score=config.badloc_min_score,
                      touch_iou=config.touch_iou)
    out = [*_missed(props, q), *_wrong_class(anns, props, q, lab_c, pred_c, config),
           *_bad_box(anns, props, q, lab_c, pred_c, config)]
    return [f for f in out if f.score > 0], q.image_quality


def _missed(props: Sequence[Proposal], q: BoxQualities) -> list[Finding]:
    out = []
    for j, p in enumerate(props):
        if np.isnan(q.overlooked[j]):
            continue
        out.append(Finding("missed", p.score * (1.0 - float(q.overlooked[j])), p.box,
                           f"possibly missed: the model sees a {p.label} here ({p.score:.2f}) with no box on it",
                           None, p.label))
    return out


def _wrong_class(anns: Sequence[Annotated], props: Sequence[Proposal], q: BoxQualities, lab_c: np.ndarray,
                 pred_c: np.ndarray, config: LintConfig) -> list[Finding]:
    out = []
    for i, a in enumerate(anns):
        if q.swap[i] >= 1.0 or np.isnan(q.swap[i]):
            continue
        other = [j for j in range(len(props)) if pred_c[j] != lab_c[i] and props[j].score > config.swap_min_score]
        if not other:
            continue
        j = max(other, key=lambda k: q.iou[i, k])  # the other-label prediction sitting on this box
        same = [props[k].score for k in range(len(props)) if pred_c[k] == lab_c[i] and q.iou[i, k] >= 0.5]
        p_other, p_same = props[j].score, max(same, default=0.0)
        score = (1.0 - float(q.swap[i])) * p_other / (p_other + p_same)
        out.append(Finding("wrong_class", score, a.box, f"possibly wrong class: labeled {a.label}, the model sees "
                           f"a {props[j].label} ({p_other:.2f}, IoU {q.iou[i, j]:.2f})", a.id, props[j].label))
    return out


def _bad_box(anns: Sequence[Annotated], props: Sequence[Proposal], q: BoxQualities, lab_c: np.ndarray,
             pred_c: np.ndarray, config: LintConfig) -> list[Finding]:
    out = []
    span = max(1e-6, config.good_quality - config.bad_quality)
    for i, a in enumerate(anns):
        quality = float(q.badloc[i])
        if quality >= config.good_quality:
            continue
        eligible = [j for j in range(len(props)) if pred_c[j] == lab_c[i] and props[j].score > config.badloc_min_score
                    and q.iou[i, j] > 0]
        if not eligible:
            continue
        j = max(eligible, key=lambda k: q.iou[i, k])
        owners = [k for k in range(len(anns)) if lab_c[k] == lab_c[i]]
        if max(owners, key=lambda k: q.iou[k, j]) != i:
            continue  # the prediction belongs to a neighbouring box: this one is not judged by it
        p = props[j]
        score = p.score * min(1.0, (config.good_quality - quality) / span)
        ax, px = _area(a.box), _area(p.box)
        loose = ax > 1.2 * px and _inter(a.box, p.box) >= 0.9 * px
        what = "looks loose: the model's box is tighter" if loose else "looks off: the model puts it elsewhere"
        out.append(Finding("bad_box", score, p.box, f"{a.label} box {what} (IoU {q.iou[i, j]:.2f})", a.id))
    return out


def _area(b: Sequence[float]) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _inter(a: Sequence[float], b: Sequence[float]) -> float:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


# --- the workspace side ------------------------------------------------------------------------------
def _repeats_dismissed(f: Finding, dismissed: Sequence[Mapping[str, Any]]) -> bool:
    """The annotator already said this one is fine: same kind, and same annotation (or, for a missed
    object, a box overlapping the dismissed one by IoU >= 0.5)."""
    for d in dismissed:
        if d["kind"] != f.kind:
            continue
        if f.annotation_id is not None and d["annotation_id"] == f.annotation_id:
            return True
        if f.annotation_id is None and d["annotation_id"] is None:
            db = (d["x1"], d["y1"], d["x2"], d["y2"])
            union = _area(db) + _area(f.box) - _inter(db, f.box)
            if union > 0 and _inter(db, f.box) / union >= 0.5:
                return True
    return False


def lint_stored_image(ws: Workspace, image_id: int, model_id: int | None, view: ProjectView | None = None,
                      config: LintConfig = LintConfig(), detections: Sequence[Any] | None = None,
                      calibration: Callable[[float], float] | None = None) -> LintResult:
    """Lint one image of the workspace with the predictions stored for `model_id` (or `detections` given),
    store the reported findings and the image's score, and return the result. Without predictions (no
    model, or this model has not predicted the image yet) only the rules run, stored under model None."""
    image = ws.image(image_id)
    if view is None:
        view = ws.project_view(_project_name(ws, image["project_id"]))
    if detections is None and model_id is not None:
        detections = ws.predictions(image_id, model_id)
        if detections is None:
            model_id = None
    elif detections is None:
        model_id = None
    anns = ws.annotations(image_id)
    project_labels = {lab["id"] for lab in ws.labels(view.taxonomy.name)} if view.taxonomy.name else None
    for a in anns:  # a label of another project is not in this taxonomy, whatever its name
        if project_labels is not None and a["label_id"] not in project_labels:
            a["label"] = f"{a['label']} (another project's label)"
    result = lint_image(anns, detections, view, image["width"], image["height"], config,
                        calibration if detections is not None else None)
    dismissed = ws.lint_findings(image_id, state="dismissed")  # by any model version: the annotator's answer
    kept = [f for f in result.findings if not _repeats_dismissed(f, dismissed)]
    ws.replace_lint_findings(image_id, model_id, [f.to_dict() for f in kept], result.image_score)
    return LintResult(kept, result.candidates, result.image_score, result.cleanlab_quality)


def project_calibration(ws: Workspace, project: str, model_id: int | None, image_ids: Sequence[int] | None = None,
                        config: LintConfig = LintConfig(), limit: int = 2000) -> ScoreCalibration | None:
    """Fit the model's score calibration on the project's labeled images that it has predicted: `image_ids`
    (default: the submitted ones), at most `limit` of them, spread evenly over the list."""
    if model_id is None:
        return None
    ids = list(image_ids) if image_ids is not None else ws.image_ids(project, "submitted")
    if len(ids) > limit:
        ids = [ids[round(k * (len(ids) - 1) / (limit - 1))] for k in range(limit)]
    view = ws.project_view(project)
    pairs = []
    for image_id in ids:
        dets = ws.predictions(image_id, model_id)
        if dets is None:
            continue
        pairs.append(([Annotated.from_row(a) for a in ws.annotations(image_id)],
                      customer_proposals(dets, view, min_score=0.0, nms_iou=config.nms_iou,
                                         same_object_iou=EVERY_LABEL)))
    return fit_calibration(pairs)


def _project_name(ws: Workspace, project_id: int) -> str:
    for name in ws.project_names():
        if ws.project_id(name) == project_id:
            return name
    raise LintError(f"image's project {project_id} does not exist")


@dataclass
class ProjectLint:
    project: str
    model_id: int | None
    model_version: str | None
    ranking: list[dict[str, Any]]  # image_id, path, score, findings, open: worst first
    findings: dict[int, list[Finding]] = field(default_factory=dict)  # image id -> reported findings
    predicted: int = 0  # images the model had to predict first
    errors: list[str] = field(default_factory=list)
    calibration: ScoreCalibration | None = None  # fitted on the linted images (None: raw scores)


def lint_project(folder: str | Path, project: str, *, config: LintConfig = LintConfig(),
                 statuses: Sequence[str] = ("in_progress", "submitted"), rules_only: bool = False,
                 progress: Progress | None = None, loader: Callable | None = None,
                 threads: int | None = None, batch_size: int = 4, calibrate: bool = True,
                 model_id: int | None = None) -> ProjectLint:
    """Lint every image of `project` whose status is in `statuses` with the latest model (or the registered
    model `model_id`), predicting first
    (through `PredictionService`, cached per model version) the images it has not predicted yet. With
    `calibrate`, the model's scores are first calibrated on these same images (`project_calibration`)."""
    progress = progress or (lambda stage, done, total: None)
    with Workspace.open(folder) as ws:
        ids = [i for s in statuses for i in ws.image_ids(project, s)]
        ids.sort()
        model = None if rules_only else ws.latest_model() if model_id is None else next(
            (m for m in ws.models() if m["id"] == model_id), None)
        if model is None and model_id is not None and not rules_only:
            raise LintError(f"model {model_id} is not registered in {folder}")
        todo = [i for i in ids if ws.predictions(i, model["id"]) is None] if model else []
    errors: list[str] = []
    if todo:
        model, errors = _predict(Path(folder), todo, progress, loader, threads, batch_size, model_id)
    out = ProjectLint(project, model["id"] if model else None, model["version"] if model else None, [],
                      predicted=len(todo), errors=errors)
    with Workspace.open(folder) as ws:
        view = ws.project_view(project)
        out.calibration = project_calibration(ws, project, out.model_id, ids, config) if calibrate else None
        for k, image_id in enumerate(ids):
            out.findings[image_id] = lint_stored_image(ws, image_id, out.model_id, view, config,
                                                       calibration=out.calibration).findings
            progress("lint", k + 1, len(ids))
        ranked = {r["image_id"]: r for r in ws.lint_ranking(project, out.model_id)}
        if out.model_id is not None:  # images the model could not predict were linted by the rules only
            ranked.update({r["image_id"]: r for r in ws.lint_ranking(project, None) if r["image_id"] in ids
                           and r["image_id"] not in ranked})
        out.ranking = sorted((ranked[i] for i in ids if i in ranked), key=lambda r: (-r["score"], r["image_id"]))
    return out


def _predict(folder: Path, todo: list[int], progress: Progress, loader: Callable | None, threads: int | None,
             batch_size: int, model_id: int | None = None) -> tuple[dict[str, Any], list[str]]:
    from inference.worker import predict_images

    done = [0]

    def on_result(r) -> None:
        done[0] += 1
        progress("predict", done[0], len(todo))

    run = predict_images(folder, todo, threads=threads, batch_size=batch_size, on_result=on_result, loader=loader,
                         model_id=model_id)
    if not run.loaded:
        raise LintError(run.reason() + "; lint needs it (or lint with the rules only)")
    return {"id": run.service.model_id, "version": run.service.model_version}, run.errors

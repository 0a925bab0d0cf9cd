"""`labeler drift`: a model's figures per cohort of submitted images, oldest to newest, with the change
against the oldest cohort and a flag where it drops beyond a threshold with confidence (inference/drift.py).

Exit status 0 when the report was made (flags or not; `--fail-on-drift` makes a flag exit 1, for a cron job
or CI), 2 with one line on bad input.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from labeler.cli import CommandError, arg, arguments, command
from projects.workspace import Workspace

SPLIT_CHOICES = {"held-out": ("val", "test"), "train": ("train",), "val": ("val",), "test": ("test",),
                 "all": ("train", "val", "test")}


def load_predictor(ws: Workspace, model: str | None):
    """The checkpoint in `model`, else the workspace's latest registered model (checked to be what was
    registered); CommandError when there is none."""
    from inference.predictor import Predictor

    if model:
        return Predictor.from_checkpoint(model, super_taxonomy=ws.super_taxonomy())
    row = ws.latest_model()
    if row is None:
        raise CommandError(f"{ws.folder}: no model registered; train one (`labeler train`) or pass --model DIR")
    from inference.registry import check_registered

    predictor = Predictor.from_checkpoint(ws.model_path(row), super_taxonomy=ws.super_taxonomy())
    check_registered(ws, row, predictor.checkpoint)
    return predictor


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _change(f) -> str:
    if f.change is None:
        return "n/a (not in the oldest cohort)" if f.change_low is None else "n/a"
    interval = f" [{_fmt(f.change_low, True)}, {_fmt(f.change_high, True)}]" if f.change_low is not None else ""
    p = f" p={f.p_value:.3g}" if f.p_value is not None else ""
    return f"{_fmt(f.change, True)}{interval}{p}"


def print_report(report) -> None:
    splits = "/".join(report.splits)
    print(f"model {report.model}: {report.overall.figures.images} submitted images of the {splits} split, "
          f"{len(report.cohorts)} cohorts ({report.by}); a drop of {report.metric} >= {report.threshold} whose "
          f"bootstrap interval ({report.bootstrap} resamples, {report.confidence:.0%} for each cohort's rows together) "
          f"lies below 0 is flagged (rows of at least {report.min_flag_images} images)")
    metric = report.metric
    recall = f"recall@{report.score_threshold}"
    head = f"{'':4}{'':28} {'images':>6} {'gt':>5} {'mAP50':>6} {'mAP':>6} {recall:>10}"
    print(f"{head}  {metric} change vs the oldest [interval] p (pooled-null bootstrap test)")
    for ci, c in enumerate(report.cohorts):
        print(f"{c.label}")
        rows = [("all", c.figures)] + [(f"project {p}", f) for p, f in c.projects.items()] + \
               [(f"node {n}", f) for n, f in c.nodes.items()]
        for name, f in rows:
            change = "(baseline)" if ci == 0 else _change(f)
            flag = "  DROP" if f.flagged else ""
            print(f"    {name:<28} {f.images:>6} {f.gt:>5} {_fmt(f.mAP50):>6} {_fmt(f.mAP):>6} {_fmt(f.recall):>10}  "
                  f"{change}{flag}")
    flagged = [(c.label, c.flags) for c in report.cohorts if c.flags]
    if flagged:
        for label, flags in flagged:
            print(f"DRIFT: {label}: {metric} dropped for {', '.join(flags)}")
    else:
        print("no cohort dropped beyond the threshold with confidence")
    for reason in report.skipped:
        print(f"not scored: {reason}", file=sys.stderr)


@command("drift", help="a model's figures per cohort of submitted images (oldest to newest), flagging drops")
@arguments(arg("ws"),
           arg("--model", metavar="DIR", help="checkpoint folder (default: the latest registered model)"),
           arg("--by", choices=["submit-week", "import"],
               help="cohorts by the week images were submitted, or by the import run that added them"),
           arg("--cohorts", type=int, metavar="N", help="N cohorts of equal size in submit order (default 4)"),
           arg("--project", action="append", metavar="P", help="only this project (repeatable)"),
           arg("--split", choices=list(SPLIT_CHOICES), default="held-out",
               help="images scored: held-out (val + test, the default: a model remembers its training images), "
                    "train, val, test or all"),
           arg("--metric", choices=["mAP50", "recall"], default="mAP50", help="the figure whose drop is flagged"),
           arg("--threshold", type=float, default=0.05, help="flag a drop of at least this much (default 0.05)"),
           arg("--confidence", type=float, default=0.95, help="bootstrap interval share (default 0.95)"),
           arg("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000; 0: no intervals)"),
           arg("--score", type=float, default=None,
               help="score threshold of the recall figure (default: the window's display threshold, 0.4)"),
           arg("--min-images", type=int, default=1, help="merge a cohort smaller than this into the next one"),
           arg("--seed", type=int, default=0, help="seed of the bootstrap resampling"),
           arg("--json", metavar="FILE", help="also write the report as JSON (its `cohorts` list is oldest first)"),
           arg("--fail-on-drift", action="store_true", help="exit with status 1 when a cohort is flagged"))
def drift(args) -> int:
    from tqdm import tqdm

    from inference.drift import DEFAULT_COHORTS, DISPLAY_THRESHOLD, drift_report

    if args.by and args.cohorts is not None:
        raise CommandError("give --by or --cohorts, not both")
    with Workspace.open(args.ws) as ws:
        predictor = load_predictor(ws, args.model)
        bar = tqdm(desc="predict", unit="img", disable=None, leave=False)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            report = drift_report(ws, predictor, by=args.by or "cohorts",
                                  cohorts=DEFAULT_COHORTS if args.cohorts is None else args.cohorts,
                                  projects=args.project, splits=SPLIT_CHOICES[args.split], metric=args.metric,
                                  threshold=args.threshold, confidence=args.confidence, bootstrap=args.bootstrap,
                                  seed=args.seed, min_images=args.min_images, progress=progress,
                                  score_threshold=DISPLAY_THRESHOLD if args.score is None else args.score)
        finally:
            bar.close()
    print_report(report)
    if args.json:
        write_json(Path(args.json), report.to_dict())
    return 1 if args.fail_on_drift and report.flagged else 0


def write_json(path: Path, data: dict) -> None:
    """Written whole or not at all (temp file + rename); an unwritable path is one line."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CommandError(f"{path}: cannot write ({e.strerror or e})") from e

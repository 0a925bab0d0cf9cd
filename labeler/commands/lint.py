"""`labeler lint`: check a whole project's annotations with the model, rank images by likely mistakes."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from tqdm import tqdm

from labeler.cli import CommandError, arg, arguments, command
from projects.schema import STATUSES
from projects.store.target import as_target
from projects.workspace import Workspace


def _statuses(text: str) -> list[str]:
    out = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in out if s not in STATUSES]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"unknown status {', '.join(bad) or '(none)'} (use {', '.join(STATUSES)})")
    return out


@command("lint", help="lint a project's annotations with the model (missed, wrong class, loose boxes, duplicates, "
                      "rule violations) and rank images by how likely they hold a mistake")
@arguments(arg("ws"), arg("--project", required=True),
           arg("--json", action="store_true", help="print JSON: the ranking and every reported finding"),
           arg("--model", metavar="DIR", help="a checkpoint folder: verified, registered as a model version if it "
                                              "is new, and used for this run"),
           arg("--threshold", type=float, default=None,
               help="report findings scoring at least this (0-1, default: the linter's own, 0.5)"),
           arg("--status", default="in_progress,submitted", type=_statuses,
               help="which images to lint, by status (comma-separated; default in_progress,submitted)"),
           arg("--rules-only", action="store_true", help="no model: only the rule checks"),
           arg("--top", type=int, default=20, help="images to list (text output; default 20)"),
           arg("--threads", type=int, default=None, help="torch threads for predicting (default: cores - 1)"))
def lint(args) -> int:
    from inference.lint import KINDS, LintConfig, LintError, lint_project  # torch and cleanlab: only when linting

    if args.threshold is None:
        args.threshold = LintConfig.threshold
    if not 0.0 <= args.threshold <= 1.0:
        raise CommandError(f"--threshold must lie in 0..1, got {args.threshold}")
    with Workspace.open(args.ws) as ws:
        ws.project_id(args.project)  # fail early on a wrong name
        model_id = None
        if args.model and not args.rules_only:  # verified in full before it is registered; then it lints
            from inference.registry import ensure_registered

            reg = ensure_registered(ws, args.model)
            if reg.note or reg.new:
                print(reg.note or f"registered model {reg.version} from {reg.folder}", file=sys.stderr)
            model_id = reg.model_id
        if ws.latest_model() is None and not args.rules_only:
            print("no model registered in this workspace: only the rule checks run (train one with "
                  "`labeler train` or pass --model DIR)", file=sys.stderr)
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage) or bars.setdefault(stage, tqdm(total=total, desc=stage, unit="img", file=sys.stderr))
        bar.update(done - bar.n)
        if done >= total:
            bar.close()  # one finished line per stage, not two bars fighting over the terminal

    try:
        result = lint_project(as_target(args.ws), args.project, config=LintConfig(threshold=args.threshold),
                              statuses=args.status, rules_only=args.rules_only, progress=progress,
                              threads=args.threads, model_id=model_id)
    except LintError as e:
        raise CommandError(str(e)) from e
    finally:
        for bar in bars.values():
            bar.close()
    for e in result.errors:
        print(f"not predicted (rules only): {e}", file=sys.stderr)
    counts = Counter(f.kind for fs in result.findings.values() for f in fs)
    if args.json:
        print(json.dumps({
            "project": result.project, "model": result.model_version, "threshold": args.threshold,
            "images": len(result.findings), "predicted": result.predicted,
            "calibration": result.calibration.to_dict() if result.calibration else None,
            "counts": {k: counts.get(k, 0) for k in KINDS},
            "ranking": [{**r, "score": round(r["score"], 4),
                         "findings": [f.to_dict() for f in result.findings.get(r["image_id"], [])]}
                        for r in result.ranking],
        }, indent=2))
        return 0
    model = result.model_version or "no model (rules only)"
    print(f"linted {len(result.findings)} images of {args.project!r} with {model}; "
          f"{sum(counts.values())} findings at threshold {args.threshold:g}")
    if result.model_version:
        cal = result.calibration
        print("  model scores calibrated on these images (" + (f"{cal.positives} predictions matched a box, "
              f"{cal.negatives} did not)" if cal else "too few predictions: raw scores used)"))
    if counts:
        print("  " + ", ".join(f"{k}: {counts[k]}" for k in KINDS if counts.get(k)))
    shown = [r for r in result.ranking if r["score"] > 0][: max(0, args.top)]
    if shown:
        print(f"images most likely to hold a mistake (top {len(shown)}):")
    for r in shown:
        kinds = Counter(f.kind for f in result.findings.get(r["image_id"], []))
        what = ", ".join(f"{n} {k}" for k, n in kinds.most_common()) or "nothing above the threshold"
        print(f"  {r['score']:.2f}  #{r['image_id']}  {r['path']}  ({what})")
    return 0

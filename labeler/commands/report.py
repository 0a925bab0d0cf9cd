"""`labeler report WS --out DIR`: a static HTML page with PNG plots (inference/report.py): training loss and
validation mAP per model version, AP per node, recall at the display threshold, drift by cohort, and images
labelled per day by provenance. Open DIR/index.html in any browser."""

from __future__ import annotations

from labeler.cli import CommandError, arg, arguments, command
from labeler.commands.drift import SPLIT_CHOICES, load_predictor
from projects.workspace import Workspace


@command("report", help="write a static HTML report with plots: model versions, per-node AP, recall, drift, "
                        "labelling per day")
@arguments(arg("ws"), arg("--out", required=True, metavar="DIR",
                          help="report folder (created; a folder an earlier report wrote is replaced)"),
           arg("--model", metavar="DIR", help="checkpoint folder to evaluate (default: the latest registered model)"),
           arg("--no-eval", action="store_true",
               help="do not run the model: only the stored figures and the labelling per day"),
           arg("--project", action="append", metavar="P", help="only this project (repeatable)"),
           arg("--by", choices=["submit-week", "import"], help="drift cohorts by submit week or by import run"),
           arg("--cohorts", type=int, metavar="N", help="drift: N cohorts of equal size in submit order (default 4)"),
           arg("--split", choices=list(SPLIT_CHOICES), default="held-out",
               help="images the model is scored on (default held-out: val + test)"),
           arg("--bootstrap", type=int, default=1000, help="bootstrap resamples of the drift intervals"))
def report(args) -> int:
    from tqdm import tqdm

    from inference.drift import DEFAULT_COHORTS
    from inference.report import write_report

    if args.by and args.cohorts is not None:
        raise CommandError("give --by or --cohorts, not both")
    if args.no_eval and args.model:
        raise CommandError("--model and --no-eval contradict each other")
    with Workspace.open(args.ws) as ws:
        predictor = None
        if not args.no_eval and (args.model or ws.latest_model() is not None):
            predictor = load_predictor(ws, args.model)
        bar = tqdm(desc="predict", unit="img", disable=None, leave=False)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        options = {"by": args.by or "cohorts", "cohorts": DEFAULT_COHORTS if args.cohorts is None else args.cohorts,
                   "splits": SPLIT_CHOICES[args.split], "bootstrap": args.bootstrap}
        try:
            result = write_report(ws, args.out, predictor, projects=args.project, drift_options=options,
                                  progress=progress)
        finally:
            bar.close()
    for note in result.notes:
        print(f"note: {note}")
    if result.drift is not None and result.drift.flagged:
        print(f"drift flagged in cohort(s) {', '.join(result.drift.flagged)}")
    print(f"wrote {result.folder / 'index.html'} ({', '.join(f for f in result.files if f.endswith('.png'))})")
    return 0

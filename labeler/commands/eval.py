"""`labeler eval`: COCO metrics (pycocotools) of a model on a workspace split, or of COCO files."""

from __future__ import annotations

import json
import math
from pathlib import Path

from labeler.cli import CommandError, arg, arguments, command
from projects.workspace import Workspace


def _fmt(v: float) -> str:
    return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _print(result, title: str) -> None:
    print(f"{title}: {result.images} images, {result.gt_boxes} ground-truth boxes")
    print(f"  mAP@0.5 {_fmt(result.map50)}   mAP@[.5:.95] {_fmt(result.map)}   "
          f"recall@{result.score_threshold} {_fmt(result.recall)}")
    if result.coco:  # the rest of pycocotools' 12 summary figures
        c = result.coco
        print(f"  AP75 {_fmt(c['AP75'])}   AP small/medium/large {_fmt(c['APs'])} {_fmt(c['APm'])} {_fmt(c['APl'])}   "
              f"AR1/10/100 {_fmt(c['AR1'])} {_fmt(c['AR10'])} {_fmt(c['AR100'])}   "
              f"AR small/medium/large {_fmt(c['ARs'])} {_fmt(c['ARm'])} {_fmt(c['ARl'])}")
    loc = result.localisation
    if loc.get("matched"):
        print(f"  localisation of the {loc['matched']} boxes found: IoU>=0.9 {_fmt(loc['iou>=0.9'])}   "
              f"IoU>=0.95 {_fmt(loc['iou>=0.95'])}   median IoU {_fmt(loc['median_iou'])}")
    print(f"  {'node':<20} {'AP50':>6} {'AP':>6} {'recall':>7} {'R@P90':>6} {'gt':>5}")
    for name, r in result.per_category.items():
        print(f"  {name:<20} {_fmt(r['ap50']):>6} {_fmt(r['ap']):>6} {_fmt(r['recall']):>7} "
              f"{_fmt(r.get('recall_at_p90', float('nan'))):>6} {r['gt']:>5}")
    for name, r in result.per_project.items():
        print(f"  project {name} (on {', '.join(r['nodes'])}): mAP@0.5 {_fmt(r['mAP50'])}, mAP {_fmt(r['mAP'])}, "
              f"recall {_fmt(r['recall'])}, {r['images']} images")


@command("eval", help="evaluate a model on a workspace split, or COCO ground truth + detections files")
@arguments(arg("ws", nargs="?", help="workspace folder (not needed with --gt/--dets)"),
           arg("--model", metavar="DIR", help="checkpoint folder"),
           arg("--split", default="test", choices=["train", "val", "test"]),
           arg("--ground-truth", metavar="FILE",
               help="full ground truth in nodes (e.g. the demo's ground_truth.json) instead of the customers' boxes"),
           arg("--gt", metavar="GT.json", help="COCO ground truth file"),
           arg("--dets", metavar="DETS.json",
               help="COCO results file (a list of detections), or a COCO dataset file whose annotations carry "
                    "scores (matched to --gt by file name and category name)"),
           arg("--score", type=float, default=0.3, help="score threshold for the recall figure (default 0.3)"),
           arg("--json", metavar="FILE", help="also write the figures as JSON (with all 12 COCO summary figures)"))
def eval_cmd(args) -> int:
    from inference.checkpoint import CheckpointError
    from inference.evaluate import EvalError, evaluate_files, evaluate_ground_truth, evaluate_workspace
    from inference.predictor import Predictor

    try:
        if args.gt or args.dets:
            if not (args.gt and args.dets):
                raise CommandError("--gt and --dets go together")
            result = evaluate_files(args.gt, args.dets, args.score)
            _print(result, f"{args.dets} against {args.gt}")
        else:
            if not args.ws or not args.model:
                raise CommandError("give a workspace and --model DIR (or --gt GT.json --dets DETS.json)")
            with Workspace.open(args.ws) as ws:
                predictor = Predictor.from_checkpoint(args.model, super_taxonomy=ws.super_taxonomy())
                if args.ground_truth:
                    result = evaluate_ground_truth(ws, predictor, args.ground_truth, args.split,
                                                   score_threshold=args.score)
                else:
                    result = evaluate_workspace(ws, predictor, args.split, score_threshold=args.score)
            _print(result, f"{predictor.version} on the {args.split} split")
    except (EvalError, CheckpointError) as e:
        raise CommandError(str(e)) from e
    if args.json:
        Path(args.json).write_text(json.dumps(result.summary(), indent=1), encoding="utf-8")
    return 0

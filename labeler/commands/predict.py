"""`labeler predict`: fill the predictions table for a project, in batches, with progress.

An image that cannot be predicted (unreadable, or the model fails on it) is listed on stderr with the
reason and the run goes on; it ends with the count of failed images. Exit status 0 when at least one
image was predicted (like `images add`, which skips corrupt files), 2 with one line when none was.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from inference.worker import predict_images
from labeler.cli import CommandError, arg, arguments, command
from projects.workspace import Workspace


@command("predict", help="predict every image of a project with the latest (or a given) model, cached per version")
@arguments(arg("ws"), arg("--project", required=True),
           arg("--model", metavar="DIR", help="a checkpoint folder: verified, registered as a model version if it "
                                              "is new, and used for this run"),
           arg("--batch", type=int, default=4, help="images per forward pass"),
           arg("--threads", type=int, default=None, help="torch threads (default: cores - 1)"))
def predict(args) -> int:
    with Workspace.open(args.ws) as ws:
        ids = ws.image_ids(args.project)
        if args.model:  # verified in full before it is registered; then this model, not the latest, predicts
            from inference.registry import ensure_registered

            reg = ensure_registered(ws, args.model)
            if reg.note or reg.new:
                print(reg.note or f"registered model {reg.version} from {reg.folder}")
            model = ws.model(reg.version)
        else:
            model = ws.latest_model()
        if model is None:
            raise CommandError(f"{args.ws}: no model registered; train one (`labeler train`) or pass --model DIR")
        todo = [i for i in ids if ws.predictions(i, model["id"]) is None]
    print(f"{len(ids)} images in {args.project!r}; {len(ids) - len(todo)} already predicted by {model['version']}")
    if not todo:
        return 0
    bar = tqdm(total=len(todo), desc="predict", unit="img")
    try:
        run = predict_images(Path(args.ws), todo, threads=args.threads, batch_size=args.batch,
                             on_result=lambda r: bar.update(1), model_id=model["id"] if args.model else None)
    finally:
        bar.close()
    if run.service.predictor is None:
        raise CommandError(run.reason())
    errors, svc = run.errors, run.service
    for e in errors:  # one line per image: which one and why; the others were predicted
        print(f"not predicted: {e}", file=sys.stderr)
    print(f"predicted {len(todo) - len(errors)} images with {svc.model_version}; {len(errors)} failed"
          + (" (listed above; the next run retries them)" if errors else ""))
    if errors and len(errors) == len(todo):
        raise CommandError(f"none of the {len(todo)} images could be predicted (listed above)")
    return 0

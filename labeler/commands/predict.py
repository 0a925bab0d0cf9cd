"""`labeler predict`: fill the predictions table for a project, in batches, with progress."""

from __future__ import annotations

import threading
from pathlib import Path

from tqdm import tqdm

from inference.worker import PredictionService, Priority, Result, default_threads
from labeler.cli import CommandError, arg, arguments, command
from projects.workspace import Workspace


@command("predict", help="predict every image of a project with the latest (or a given) model, cached per version")
@arguments(arg("ws"), arg("--project", required=True),
           arg("--model", metavar="DIR", help="a checkpoint folder: registered as a model version if it is new"),
           arg("--batch", type=int, default=4, help="images per forward pass"),
           arg("--threads", type=int, default=None, help="torch threads (default: cores - 1)"))
def predict(args) -> int:
    with Workspace.open(args.ws) as ws:
        ids = ws.image_ids(args.project)
        if args.model:
            from inference.registry import model_id_for, register_checkpoint

            if model_id_for(ws, args.model) is None:
                register_checkpoint(ws, args.model)
        model = ws.latest_model()
        if model is None:
            raise CommandError(f"{args.ws}: no model registered; train one (`labeler train`) or pass --model DIR")
        todo = [i for i in ids if ws.predictions(i, model["id"]) is None]
    print(f"{len(ids)} images in {args.project!r}; {len(ids) - len(todo)} already predicted by {model['version']}")
    if not todo:
        return 0
    errors: list[str] = []
    status: list[str] = []
    lock = threading.Lock()
    bar = tqdm(total=len(todo), desc="predict", unit="img")

    def on_result(r: Result) -> None:
        with lock:
            bar.update(1)
            if r.error:
                errors.append(f"image {r.image_id}: {r.error}")

    svc = PredictionService(Path(args.ws), threads=args.threads or default_threads(), on_result=on_result,
                            on_status=status.append, batch_size=max(1, args.batch))
    svc.request_many(todo, Priority.BACKGROUND)
    svc.start()
    try:
        svc.wait_idle(timeout=None)
    finally:
        svc.stop()
        bar.close()
    if svc.predictor is None:
        raise CommandError(status[-1] if status else "the model could not be loaded")
    for e in errors:
        print(f"skipped: {e}")
    print(f"predicted {svc.forward_passes} images with {svc.model_version}; {len(errors)} failed")
    return 0 if len(errors) < len(todo) else 2

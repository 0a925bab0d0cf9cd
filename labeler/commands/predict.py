"""`labeler predict`: fill the predictions table for a project, in batches, with progress.

An image that cannot be predicted (unreadable, or the model fails on it) is listed on stderr with the
reason and the run goes on; it ends with the count of failed images. Exit status 0 when at least one
image was predicted (like `images add`, which skips corrupt files), 2 with one line when none was.

Under torchrun (or with `--nproc N`) each rank predicts a disjoint shard of the project's images (every N-th
one, `inference/distributed.shard`) with the model rank 0 chose, and writes its own results through the store
(write transactions wait their turn), on a workspace folder or a PostgreSQL team workspace alike; rank 0
registers a new `--model` and reports the totals.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

from inference.worker import predict_images
from labeler.cli import CommandError, arg, arguments, command
from projects.errors import LabelerError
from projects.store.target import as_target
from projects.workspace import Workspace


@command("predict", help="predict every image of a project with the latest (or a given) model, cached per version")
@arguments(arg("ws"), arg("--project", required=True),
           arg("--model", metavar="DIR", help="a checkpoint folder: verified, registered as a model version if it "
                                              "is new, and used for this run"),
           arg("--batch", type=int, default=4, help="images per forward pass"),
           arg("--threads", type=int, default=None, help="torch threads (default: cores - 1, or cores / ranks)"),
           arg("--no-tight-boxes", action="store_true",
               help="store the boxes of the whole-image pass as they are, without averaging each with its twin in "
                    "the mirrored image (half the forward passes; docs/prelabels.md)"),
           arg("--nproc", type=int, metavar="N",
               help="predict on N processes of this machine, each a disjoint shard of the images (launches "
                    "torchrun; one per GPU); several machines: `torchrun ... -m labeler predict ...`"))
def predict(args) -> int:
    from inference.distributed import launch_local, launched, name_connections, strip_option

    if args.nproc is not None:
        launch_local(args.nproc, strip_option(args._argv, "--nproc"), workspace=args.ws)
        return 0
    ctx = launched()
    if ctx.active:
        name_connections(ctx)  # `labeler rank R/N` on a team workspace's server
        return _predict_sharded(args)
    with Workspace.open(args.ws) as ws:
        ids = ws.image_ids(args.project)
        model = _choose_model(ws, args)
        todo = [i for i in ids if ws.predictions(i, model["id"]) is None]
    print(f"{len(ids)} images in {args.project!r}; {len(ids) - len(todo)} already predicted by {model['version']}")
    if not todo:
        return 0
    bar = tqdm(total=len(todo), desc="predict", unit="img")
    try:
        run = predict_images(as_target(args.ws), todo, threads=args.threads, batch_size=args.batch,
                             on_result=lambda r: bar.update(1), model_id=model["id"] if args.model else None,
                             tight_boxes=not args.no_tight_boxes)
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


def _choose_model(ws: Workspace, args) -> dict:
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
    return model


def _predict_sharded(args) -> int:
    """One rank of a sharded run: rank 0 picks (and registers) the model, every rank predicts its shard."""
    import torch.distributed as dist

    from inference.distributed import pin_gpu, reduce_counts, setup, shard, teardown

    pin_gpu()  # before CUDA starts: each rank of a machine its own GPU
    ctx, _ = setup("cpu")  # gloo between the ranks: a few small messages, whatever device predicts
    try:
        with Workspace.open(args.ws) as ws:
            chosen: list = [None]
            if ctx.main:
                try:
                    chosen = [_choose_model(ws, args)["version"]]
                except LabelerError as e:
                    chosen = [f"error: {e}"]
            dist.broadcast_object_list(chosen, src=0)
            if chosen[0].startswith("error: "):  # every rank stops; rank 0 says why
                if ctx.main:
                    raise CommandError(chosen[0][len("error: "):])
                return 2
            model = ws.model(chosen[0])
            if model is None:
                raise CommandError(f"rank {ctx.rank}: model {chosen[0]} that rank 0 chose is not in {args.ws}: "
                                   "every rank must open the same workspace (shared storage)")
            ids = ws.image_ids(args.project)
            mine = shard(ids, ctx)  # disjoint whatever else is predicting now: the shard is of all the images
            todo = [i for i in mine if ws.predictions(i, model["id"]) is None]
        if ctx.main:
            print(f"{len(ids)} images in {args.project!r}, on {ctx.world_size} ranks; predicting with "
                  f"{model['version']} what is not predicted yet", flush=True)
        threads = args.threads or max(1, (os.cpu_count() or 1) // ctx.local_world_size)
        failed_here = 0
        if todo:
            bar = tqdm(total=len(todo), desc="predict (rank 0)", unit="img", disable=not ctx.main)
            try:
                run = predict_images(as_target(args.ws), todo, threads=threads, batch_size=args.batch,
                                     on_result=lambda r: bar.update(1), model_id=model["id"],
                                     tight_boxes=not args.no_tight_boxes)
            finally:
                bar.close()
            if run.service.predictor is None:  # the model did not load here: this rank's shard is not predicted
                print(f"not predicted: rank {ctx.rank}: {run.reason()} ({len(todo)} images)", file=sys.stderr)
                failed_here = len(todo)
            else:
                for e in run.errors:  # one line per image: which one and why; the others were predicted
                    print(f"not predicted: {e}", file=sys.stderr)
                failed_here = len(run.errors)
        wanted, failed = (int(v) for v in reduce_counts(ctx, [float(len(todo)), float(failed_here)], None))
        if ctx.main:
            print(f"predicted {wanted - failed} images with {model['version']} on {ctx.world_size} ranks "
                  f"({len(ids) - wanted} already predicted); {failed} failed"
                  + (" (listed above; the next run retries them)" if failed else ""))
        if failed and failed == wanted:
            if ctx.main:
                raise CommandError(f"none of the {wanted} images could be predicted (listed above)")
            return 2
        return 0
    finally:
        teardown()

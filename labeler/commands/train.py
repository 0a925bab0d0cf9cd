"""`labeler train`: train one detector across the workspace's projects and register it."""

from __future__ import annotations

import json
import os
import signal
import threading

from labeler.cli import CommandError, arg, arguments, command
from projects.workspace import Workspace


def _approaches() -> list[str]:
    from inference.approaches import APPROACHES

    return list(APPROACHES)


def _models() -> list[str]:
    from inference.models import MODEL_SPECS

    return sorted(MODEL_SPECS)


@command("train", help="train a detector on the submitted images of a workspace (Taxonomy Loss Masking by default)")
@arguments(arg("ws", help="workspace folder"),
           arg("--out", required=True, metavar="DIR", help="checkpoint folder (model.safetensors + model.json)"),
           arg("--approach", default="tlm", help="tlm (default), naive, heads or per-class"),
           arg("--model", default="tf_efficientdet_lite0", help="detector config name (see `labeler train --help`)"),
           arg("--image-size", type=int, default=256, help="square input size, a multiple of 64 (default 256)"),
           arg("--epochs", type=float, help="passes over the training split"),
           arg("--minutes", type=float, help="wall-clock training budget instead of epochs"),
           arg("--steps", type=int, help="optimizer steps in all, instead of epochs or minutes"),
           arg("--projects", help="comma-separated project names (default: all)"),
           arg("--batch-size", type=int, default=8),
           arg("--lr", type=float, default=2e-3),
           arg("--pretrained", default="auto",
               help="auto (packaged ImageNet backbone where one exists), package, online, online-backbone, none"),
           arg("--ignore-band", action="store_true",
               help="RetinaNet-style: anchors with IoU in [0.4, 0.5) teach nothing"),
           arg("--half", action="store_true", help="store the weights as float16 (half the file)"),
           arg("--freeze-stages", type=int, default=None, metavar="N",
               help="keep the first N backbone stages (stem, block groups) at their ImageNet weights: cheaper steps "
                    "(default 3: stem + blocks 1-2; 0 trains everything; docs/training.md)"),
           arg("--freeze-bn", action="store_true", help="keep the backbone's batch norms at their ImageNet statistics"),
           arg("--bf16", default=None, choices=("auto", "on", "off"),
               help="bfloat16 autocast on CPU (default off: slower than float32 on the machine measured)"),
           arg("--device", help="cpu or cuda (default: cuda when present)"),
           arg("--threads", type=int, help="torch CPU threads"),
           arg("--seed", type=int, default=0),
           arg("--no-eval", action="store_true", help="skip the validation-split evaluation"),
           arg("--no-register", action="store_true", help="do not register the model version in the workspace"),
           arg("--follow", action="store_true",
               help="keep training while people label: stream newly submitted images, checkpoint regularly and "
                    "register a checkpoint only when it beats the current model on the test split; stops on "
                    "Ctrl-C, SIGTERM or a stop from the window (--minutes/--steps cap it)"),
           arg("--every-minutes", type=float, metavar="M",
               help="--follow: a checkpoint every M minutes of training (default 10)"),
           arg("--every-images", type=int, metavar="N",
               help="--follow: a checkpoint once N newly submitted images have been trained on"),
           arg("--every-steps", type=int, metavar="S", help="--follow: a checkpoint every S optimizer steps"),
           arg("--new-share", type=float, default=0.5,
               help="--follow: share of each batch drawn from new images, the rest replays older ones (0.5)"),
           arg("--min-delta", type=float, default=0.0,
               help="--follow: register when the checkpoint beats the current model by more than this (0)"),
           arg("--gate-metric", default="mAP50", help="--follow: mAP50 (default), mAP or recall"),
           arg("--poll-seconds", type=float, default=10.0,
               help="--follow: how often the workspace is read for new submissions (10)"),
           arg("--patience", type=int, default=3,
               help="--follow: after this many checkpoints in a row not registered and no new image, wait for new "
                    "submissions instead of training on (0: never wait)"),
           arg("--max-checkpoints", type=int, help="--follow: stop after this many checkpoints"),
           arg("--nice", type=int, default=0, help="lower this process's CPU priority by this much (the window's "
                                                    "trainer button uses 10)"),
           arg("--nproc", type=int, metavar="N",
               help="train on N processes of this machine with DistributedDataParallel (launches torchrun; one per "
                    "GPU, or CPU processes with gloo); --batch-size stays the global batch; --follow too. Several "
                    "machines: start `torchrun ... -m labeler train ...` on each (docs/distributed.md)"),
           arg("--save-every", type=float, default=120.0, metavar="SECONDS",
               help="save the training state this often (default 120); a stopped run resumes from the last one"))
def train_cmd(args) -> int:
    import torch

    from inference.checkpoint import CheckpointError
    from inference.distributed import (
        DistributedError,
        LauncherStopped,
        RunStopped,
        launch_local,
        launched,
        name_connections,
        strip_option,
    )
    from inference.models import ModelError
    from inference.train import TrainConfig, TrainError, train

    if args.nice:
        try:
            os.nice(args.nice)
        except (OSError, AttributeError):
            pass
    if args.follow:
        _follow_configs(args)  # a bad option is one line here, not one per rank
    if args.nproc is not None and args.nproc > 0 and args.batch_size % args.nproc:
        raise CommandError(f"--batch-size {args.batch_size} is the global batch and must split evenly over the "
                           f"{args.nproc} ranks; give a multiple of {args.nproc}")
    if args.nproc is not None:
        try:
            launch_local(args.nproc, strip_option(args._argv, "--nproc"), workspace=args.ws)
        except LauncherStopped:
            if args.follow:  # stopping is how a follow trainer ends: rank 0 said where, and the same command resumes
                return 0
            raise
        return 0
    name_connections(launched())  # under torchrun: `labeler rank R/N` on a team workspace's server
    if args.follow:
        return _follow(args)
    if any(v is not None for v in (args.every_minutes, args.every_images, args.every_steps, args.max_checkpoints)):
        raise CommandError("--every-minutes, --every-images, --every-steps and --max-checkpoints need --follow")
    if sum(b is not None for b in (args.epochs, args.minutes, args.steps)) != 1:
        raise CommandError("give exactly one of --epochs N, --minutes M or --steps S")
    if args.approach not in _approaches():
        raise CommandError(f"unknown approach {args.approach!r} (one of {', '.join(_approaches())})")
    if args.model not in _models():
        raise CommandError(f"unknown model {args.model!r} (one of {', '.join(_models())})")
    if args.threads:
        torch.set_num_threads(args.threads)
    projects = [p.strip() for p in args.projects.split(",")] if args.projects else None
    cfg = TrainConfig(approach=args.approach, model=args.model, image_size=args.image_size, epochs=args.epochs,
                      minutes=args.minutes, steps=args.steps, projects=projects,
                      batch_size=args.batch_size, lr=args.lr, pretrained=args.pretrained, seed=args.seed,
                      ignore_band=(0.4, 0.5) if args.ignore_band else None,
                      dtype="float16" if args.half else "float32", device=args.device,
                      evaluate=not args.no_eval, register=not args.no_register, save_every_s=args.save_every,
                      **_speed_options(args))
    with Workspace.open(args.ws) as ws:
        try:
            result = train(ws, args.out, cfg)
        except (TrainError, DistributedError, ModelError, CheckpointError, ValueError) as e:
            rank = launched().rank
            if rank != 0 and isinstance(e, RunStopped):
                return 2  # rank 0 says where the run stopped and where its state is
            raise CommandError(str(e) if rank == 0 else f"rank {rank}: {e}") from e
    if result.rank != 0:  # under torchrun, rank 0 reports the run
        return 0
    t = result.metrics["train"]
    ranks = f", {t['world_size']} ranks" if t.get("world_size", 1) > 1 else ""
    print(f"trained {result.version}: {t['steps']} steps, {t['images_seen']} images in {t['seconds']:.0f} s "
          f"({t['images_per_s']} img/s on {t['device']}{ranks}) -> {result.folder}")
    if "val" in result.metrics:
        v = result.metrics["val"]
        print(f"val: mAP@0.5 {v['mAP50']:.3f}, mAP@[.5:.95] {v['mAP']:.3f}, recall@{v['score_threshold']} "
              f"{v['recall']:.3f} on {v['images']} images")
    if result.model_id is not None:
        print(f"registered as model {result.model_id} in {args.ws}")
    else:
        print(json.dumps({"version": result.version}))
    return 0


def _check_common(args) -> None:
    if args.approach not in _approaches():
        raise CommandError(f"unknown approach {args.approach!r} (one of {', '.join(_approaches())})")
    if args.model not in _models():
        raise CommandError(f"unknown model {args.model!r} (one of {', '.join(_models())})")


def _speed_options(args) -> dict:
    """The cheaper-step options given on the command line (TrainConfig's defaults otherwise)."""
    if args.freeze_stages is not None and args.freeze_stages < 0:
        raise CommandError(f"--freeze-stages must be 0 or more (got {args.freeze_stages})")
    given = {"freeze_stages": args.freeze_stages, "freeze_bn": True if args.freeze_bn else None, "bf16": args.bf16}
    return {k: v for k, v in given.items() if v is not None}


def _follow_configs(args):
    """The follow trainer's TrainConfig and FollowConfig from the options, checked."""
    from inference.follow import FollowConfig
    from inference.train import TrainConfig

    if args.epochs is not None:
        raise CommandError("--follow trains until stopped: give no --epochs (--minutes or --steps cap the run)")
    if args.no_register or args.no_eval:
        raise CommandError("--follow evaluates every checkpoint and registers the better ones: "
                           "--no-eval and --no-register do not apply")
    _check_common(args)
    projects = [p.strip() for p in args.projects.split(",")] if args.projects else None
    cfg = TrainConfig(approach=args.approach, model=args.model, image_size=args.image_size, minutes=args.minutes,
                      steps=args.steps, projects=projects, batch_size=args.batch_size, lr=args.lr,
                      pretrained=args.pretrained, seed=args.seed,
                      ignore_band=(0.4, 0.5) if args.ignore_band else None,
                      dtype="float16" if args.half else "float32", device=args.device)
    fcfg = FollowConfig(every_minutes=args.every_minutes, every_images=args.every_images,
                        every_steps=args.every_steps, recent_share=args.new_share, metric=args.gate_metric,
                        min_delta=args.min_delta, poll_s=args.poll_seconds, patience=args.patience,
                        max_checkpoints=args.max_checkpoints).check()
    return cfg, fcfg


def _follow(args) -> int:
    """`labeler train WS --out DIR --follow`: train until stopped (inference/follow.py); every rank under torchrun."""
    import torch

    from inference.checkpoint import CheckpointError
    from inference.distributed import DistributedError, RunStopped, launched, teardown
    from inference.follow import FollowTrainer
    from inference.models import ModelError
    from inference.train import TrainError

    cfg, fcfg = _follow_configs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    rank = launched().rank
    stop = threading.Event()
    how: list[str] = []
    held: list = []  # the trainer, once built (the handler names the signal in its status row)

    def on_signal(signum, frame) -> None:
        if stop.is_set() and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        how.append(signal.Signals(signum).name)
        if held:
            held[0].stopped_by = held[0].stopped_by or how[0]
        if rank == 0:  # every rank gets torchrun's signal; rank 0 speaks for the run
            print(f"\n{how[-1]}: stopping after the current step (its state is kept for a resume)…", flush=True)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Workspace.open(args.ws) as ws:
            held.append(FollowTrainer(ws, args.out, cfg, fcfg, stop))
            if how:
                held[0].stopped_by = how[0]
            result = held[0].run()
    except (TrainError, DistributedError, ModelError, CheckpointError) as e:
        if rank != 0 and isinstance(e, RunStopped):
            return 2  # rank 0 says where the run stopped and where its state is
        raise CommandError(str(e) if rank == 0 else f"rank {rank}: {e}") from e
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        teardown()
    if rank != 0:  # rank 0 reports the run
        return 0
    print(f"follow trainer stopped ({result.stopped_by}): {result.steps} steps, {result.images_seen} images, "
          f"{len(result.checkpoints)} checkpoints, {len(result.registered)} registered; the same command resumes it")
    for c in result.registered:
        print(f"  model {c.model_id}: {c.version} ({c.gate.metric} {c.gate.candidate:.3f}) in {c.folder}")
    return 0

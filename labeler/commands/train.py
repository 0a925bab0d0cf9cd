"""`labeler train`: train one detector across the workspace's projects and register it."""

from __future__ import annotations

import json

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
           arg("--device", help="cpu or cuda (default: cuda when present)"),
           arg("--threads", type=int, help="torch CPU threads"),
           arg("--seed", type=int, default=0),
           arg("--no-eval", action="store_true", help="skip the validation-split evaluation"),
           arg("--no-register", action="store_true", help="do not register the model version in the workspace"))
def train_cmd(args) -> int:
    import torch

    from inference.checkpoint import CheckpointError
    from inference.models import ModelError
    from inference.train import TrainConfig, TrainError, train

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
                      evaluate=not args.no_eval, register=not args.no_register)
    with Workspace.open(args.ws) as ws:
        try:
            result = train(ws, args.out, cfg)
        except (TrainError, ModelError, CheckpointError, ValueError) as e:
            raise CommandError(str(e)) from e
    t = result.metrics["train"]
    print(f"trained {result.version}: {t['steps']} steps, {t['images_seen']} images in {t['seconds']:.0f} s "
          f"({t['images_per_s']} img/s on {t['device']}) -> {result.folder}")
    if "val" in result.metrics:
        v = result.metrics["val"]
        print(f"val: mAP@0.5 {v['mAP50']:.3f}, mAP@[.5:.95] {v['mAP']:.3f}, recall@{v['score_threshold']} "
              f"{v['recall']:.3f} on {v['images']} images")
    if result.model_id is not None:
        print(f"registered as model {result.model_id} in {args.ws}")
    else:
        print(json.dumps({"version": result.version}))
    return 0

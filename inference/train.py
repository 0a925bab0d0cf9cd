"""Training a detector on a workspace: one function behind `labeler train` and the benchmarks.

CUDA with automatic mixed precision when a GPU is there, else CPU. The budget is epochs or minutes
of wall time (the comparison gives every approach the same minutes). Progress is a tqdm bar with the
loss, images/s and the ETA. Training is resumable: the model, optimizer and counters are saved every
`save_every_s` seconds and on Ctrl-C to `OUT/train_state/` (safetensors + JSON, no pickle), and the
same command picks up from there. At the end the checkpoint is written to OUT, evaluated on the
validation split when there is one, and registered as a model version of the workspace.

Under torchrun (or `labeler train --nproc N`) every rank runs this same loop with DistributedDataParallel, one
global batch and the same images per step as one process (inference/distributed.py); rank 0 alone writes the
state, the step log (`OUT/train_log.jsonl`: the loss of every step), the checkpoint, evaluates and registers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from inference.approaches import LossComputer, Phase, approach
from inference.architectures import build_detector
from inference.checkpoint import save_checkpoint
from inference.dataset import DatasetError, DetectionDataset, load_training_data
from inference.distributed import (
    DistributedError,
    DistributedLoss,
    RunStopped,
    ShardedEpochs,
    StopSignals,
    agree_on_ids,
    agree_on_value,
    agree_resume,
    agree_stop,
    describe_failure,
    global_batch,
    is_peer_failure,
    setup,
    sync_batch_norm,
    teardown,
)
from inference.models import DEFAULT_MODEL, check_image_size, model_spec, resolve_pretrained
from inference.train_speed import autocast, freeze, resolve_bf16
from projects.errors import LabelerError
from projects.workspace import Workspace

STATE_DIR = "train_state"
STEP_LOG = "train_log.jsonl"
FREEZE_STAGES = 3  # stem + blocks 1-2: 1.37x img/s, same loss (docs/benchmarks/training.md)
FREEZE_BN = False  # higher training loss after the same steps, no clear speed-up
BF16 = "off"  # slower than float32 here even with AMX (0.88x); "auto" turns it on where the CPU has bf16


class TrainError(LabelerError, RuntimeError):
    """Training cannot start or resume; the message says why."""


@dataclass
class TrainConfig:
    approach: str = "tlm"
    model: str = DEFAULT_MODEL
    image_size: int = 256
    epochs: float | None = None
    minutes: float | None = None
    steps: int | None = None  # optimizer steps in all (a compute budget that other jobs on the machine cannot skew)
    projects: list[str] | None = None
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    pretrained: str = "auto"
    seed: int = 0
    ignore_band: tuple[float, float] | None = None
    target_rules: dict[str, Any] | None = None
    save_every_s: float = 120.0
    dtype: str = "float32"
    device: str | None = None
    evaluate: bool = True
    register: bool = True
    progress: bool = True
    max_steps: int | None = None  # a hard cap (tests)
    # cheaper CPU steps (inference/train_speed.py; defaults from bench/bench_train_speed.py's figures)
    freeze_stages: int = FREEZE_STAGES  # leading backbone stages (stem, block groups) kept at their ImageNet weights
    freeze_bn: bool = FREEZE_BN  # the backbone's batch norms keep their ImageNet statistics
    bf16: str = BF16  # bfloat16 autocast on CPU: auto (where the CPU has native bf16), on, off

    def identity(self) -> dict[str, Any]:
        """What must match for a saved state to be resumed."""
        keys = ("approach", "model", "image_size", "epochs", "minutes", "steps", "projects", "batch_size", "lr",
                "pretrained", "seed", "ignore_band", "target_rules", "freeze_stages", "freeze_bn")
        return json.loads(json.dumps({k: getattr(self, k) for k in keys}))


@dataclass
class TrainResult:
    folder: Path
    version: str
    model_id: int | None
    metrics: dict[str, Any] = field(default_factory=dict)
    rank: int = 0  # under torchrun: this process's rank (only rank 0 saves, evaluates and registers)
    world_size: int = 1


def lr_factor(progress: float, warmup: float = 0.05, floor: float = 0.02) -> float:
    """Linear warm-up then cosine decay, as a function of the share of the budget used."""
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        return 0.1 + 0.9 * p / warmup
    q = (p - warmup) / (1 - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * q))


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors = {f"opt.{pid}.{k}": v.detach().cpu().contiguous() for pid, st in sd["state"].items()
               for k, v in st.items() if isinstance(v, torch.Tensor)}
    return tensors, {"param_groups": sd["param_groups"]}


def _optimizer_from(tensors: dict[str, torch.Tensor], groups: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": groups["param_groups"]}


def save_state(state_dir: Path, model, opt, meta: dict[str, Any]) -> None:
    """Model, optimizer and `meta` (counters, config) to `state_dir`, weights first, each file moved into place:
    a crash leaves the previous state or the new one, never a JSON that points at half-written tensors."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_t, opt_meta = _optimizer_tensors(opt)
    tensors.update(opt_t)
    tmp = state_dir / "state.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, state_dir / "state.safetensors")
    tmp_j = state_dir / "state.json.tmp"
    tmp_j.write_text(json.dumps({**meta, "optimizer": opt_meta}), encoding="utf-8")
    os.replace(tmp_j, state_dir / "state.json")


def load_state(state_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(tensors, meta) saved by `save_state`, or None when there is none; TrainError when unreadable."""
    j = state_dir / "state.json"
    if not j.is_file():
        return None
    try:
        meta = json.loads(j.read_text(encoding="utf-8"))
        tensors = load_file(str(state_dir / "state.safetensors"))
    except Exception as e:
        raise TrainError(f"{state_dir}: unreadable training state ({e}); delete it to start over") from e
    return tensors, meta


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    opt.load_state_dict(_optimizer_from({k: v for k, v in tensors.items() if k.startswith("opt.")}, meta["optimizer"]))


def train_step(model, opt, scaler, loss_fn, phase: Phase, x: torch.Tensor, batch: list[dict], device: torch.device,
               amp: bool, step: int, bf16: bool = False) -> float:
    """One optimizer step on a collated batch; returns the loss. Shared by `train` and the follow trainer.
    `amp`: float16 autocast on CUDA; `bf16`: bfloat16 autocast on CPU."""
    x = x.to(device, non_blocking=True)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    for t in batch:
        t["boxes_yxyx"] = t["boxes_yxyx"].to(device)
        t["weights"] = t["weights"].to(device)
    with autocast(device, amp, bf16):
        loss, _ = loss_fn(x, batch, phase)
    if not torch.isfinite(loss):
        raise TrainError(f"the loss became {float(loss)} at step {step}; lower --lr")
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    scaler.step(opt)
    scaler.update()
    return float(loss.detach())


class Trainer:
    def __init__(self, ws: Workspace, out: str | Path, cfg: TrainConfig):
        self.ws, self.out, self.cfg = ws, Path(out), cfg
        budgets = [b for b in (cfg.epochs, cfg.minutes, cfg.steps) if b is not None]
        if len(budgets) != 1:
            raise TrainError("give exactly one budget: epochs, minutes or steps")
        if budgets[0] <= 0:
            raise TrainError("the budget must be positive")
        check_image_size(cfg.image_size)
        self.spec = model_spec(cfg.model)
        self.app = approach(cfg.approach)
        self.dist, self.device = setup(cfg.device)  # a rank of a torchrun run joins its process group here
        self.amp = self.device.type == "cuda"
        try:
            self.bf16 = self.device.type == "cpu" and resolve_bf16(cfg.bf16)
        except ValueError as e:
            raise TrainError(str(e)) from None
        if cfg.batch_size % self.dist.world_size:
            global_batch(cfg.batch_size, cfg.batch_size, self.dist)  # says why
        try:
            self.data = load_training_data(ws, cfg.projects, cfg.target_rules)
        except DatasetError as e:
            raise TrainError(str(e)) from e
        if self.dist.active:  # every rank trains on rank 0's images, whatever was submitted between two reads
            ids = agree_on_ids(self.dist, [s.image_id for s in self.data.samples], "submitted images")
            by_id = {s.image_id: s for s in self.data.samples}
            self.data.samples = [by_id[i] for i in ids]
            agree_on_value(self.dist, _fingerprint(self.data.samples), "boxes for the same images")
        self.train_samples = self.data.split("train")
        if not self.train_samples:
            raise TrainError(f"{ws.folder}: no submitted images in the train split of "
                             f"{', '.join(cfg.projects or ws.project_names()) or 'any project'}; submit some first")
        self.groups = self.app.groups(self.data)
        if not self.groups:
            raise TrainError("no project labels any node: nothing to learn")
        self.phases = self.app.phases(self.data, self.groups, self.train_samples)
        self.norm = self.spec.normalisation()

    # --- state ---------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.out / STATE_DIR

    def _save_state(self, model, opt, counters: dict[str, Any]) -> None:
        if not self.dist.main:  # rank 0 alone writes
            return
        save_state(self.state_dir, model, opt, {"config": self.cfg.identity(), "counters": counters})

    def _load_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        loaded = load_state(self.state_dir)
        if loaded is None:
            return None
        tensors, meta = loaded
        if meta.get("config") != self.cfg.identity():
            raise TrainError(f"{self.state_dir}: a run with other settings was interrupted here; rerun it with the "
                             "same options, or delete that folder (or pick another --out) to start over")
        return tensors, meta

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        # on several ranks a signal only asks for a stop, which they agree on after a step: a rank that saves
        # the state after another rank failed is never cut short by the SIGTERM torchrun sends it then
        with StopSignals() if self.dist.active else _no_signals() as self._signals:
            return self._run()

    def _run(self) -> TrainResult:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        resumed = self._load_state()
        started_pretrained = resolve_pretrained(self.spec, cfg.pretrained) != "none"  # frozen random weights: no
        pretrained = "none" if resumed else resolve_pretrained(self.spec, cfg.pretrained)
        model = build_detector(self.app.layout, cfg.model, self.groups, cfg.image_size, pretrained).to(self.device)
        if self.device.type == "cpu":  # oneDNN convolutions run about a quarter faster in NHWC on CPU
            model = model.to(memory_format=torch.channels_last)
        rank = self.dist.rank  # the same weights on every rank; each rank's own randomness seeded apart
        torch.manual_seed(cfg.seed + rank)
        random.seed(cfg.seed + rank)
        np.random.seed(cfg.seed + rank)
        counters: dict[str, Any] = {"phase": 0, "phase_step": 0, "phase_seconds": 0.0, "steps": 0,
                                    "images": 0, "seconds": 0.0, "loss": None}
        opt_state = None
        if resumed:
            tensors, meta = resumed
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            counters.update(meta["counters"])
            opt_state = _optimizer_from({k: v for k, v in tensors.items() if k.startswith("opt.")}, meta["optimizer"])
            if self.dist.main:
                print(f"resuming from {self.state_dir} at step {counters['steps']} (phase {counters['phase'] + 1})")
        loss_fn = LossComputer(self.app, model, self.data, self.groups, cfg.ignore_band).to(self.device)
        if self.dist.active:
            agree_resume(self.dist, counters["steps"], str(self.state_dir))
            model = sync_batch_norm(model, self.device)
        if started_pretrained:  # after the batch norms are synced, before DDP sees which parameters learn
            self.frozen = freeze(model, cfg.freeze_stages, cfg.freeze_bn)
        if self.dist.active:
            loss_fn = DistributedLoss(self.dist, model, loss_fn, self.device, find_unused=self.app.layout != "single")
            if self.dist.main:
                print(f"training on {self.dist.describe()}, {self.device.type}: global batch {cfg.batch_size}, "
                      f"{cfg.batch_size // self.dist.world_size} per rank", flush=True)
        self._open_step_log(counters["steps"])
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        for pi in range(counters["phase"], len(self.phases)):
            phase = self.phases[pi]
            if pi != counters["phase"]:
                counters.update(phase=pi, phase_step=0, phase_seconds=0.0)
                opt_state = None
            params = [p for p in self.app.parameters(model, phase) if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
            if opt_state is not None:
                opt.load_state_dict(opt_state)
                opt_state = None
            steps_before = counters["steps"]
            try:
                self._run_phase(model, opt, scaler, loss_fn, phase, counters)
            except KeyboardInterrupt:
                self._save_state(model, opt, counters)
                print(f"\ninterrupted: state saved to {self.state_dir}; run the same command to resume")
                raise
            except _Stopped as e:  # every rank agreed on it after the same step
                self._save_state(model, opt, counters)
                raise RunStopped(f"{e}: stopped after step {counters['steps']}; state saved to "
                                       f"{self.state_dir}; run the same command to resume") from None
            except RuntimeError as e:
                if isinstance(e, LabelerError) or not (self.dist.active and is_peer_failure(e)):
                    raise
                # a rank went away during a step: no optimizer stepped, so the state is the last finished step's
                self._save_state(model, opt, counters)
                raise RunStopped(f"another rank stopped during step {counters['steps'] + 1} "
                                       f"({describe_failure(e)}); "
                                       f"state of step {counters['steps']} saved to {self.state_dir}; run the same "
                                       "command to resume") from None
            if counters["steps"] != steps_before:  # a phase that did nothing (a step cap) leaves nothing to save
                if pi + 1 < len(self.phases):
                    counters.update(phase=pi + 1, phase_step=0, phase_seconds=0.0)
                self._save_state(model, opt, counters)
        if not self.dist.main:  # rank 0 alone saves the checkpoint, evaluates and registers
            return TrainResult(self.out, "", None, {}, self.dist.rank, self.dist.world_size)
        self._signals.release()  # the other ranks are done: Ctrl-C interrupts the evaluation as usual
        return self._finish(model, counters)

    # --- the step log (rank 0) -----------------------------------------------------------------------
    def _open_step_log(self, resumed_at: int) -> None:
        """OUT/train_log.jsonl, one line per step: kept up to the resumed step, started afresh otherwise."""
        self._log = None
        if not self.dist.main:
            return
        path = self.out / STEP_LOG
        kept: list[str] = []
        if resumed_at and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line)["step"] <= resumed_at:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    break
        self.out.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        self._log = path

    def _log_step(self, counters: dict[str, Any], loss: float, lr: float) -> None:
        if getattr(self, "_log", None) is not None:
            with self._log.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"step": counters["steps"], "phase": counters["phase"], "loss": loss, "lr": lr,
                                    "images": counters["images"], "seconds": round(counters["seconds"], 4),
                                    "world_size": self.dist.world_size}) + "\n")

    def _budget(self, phase: Phase, steps_per_epoch: int) -> tuple[str, float]:
        if self.cfg.minutes is not None:
            return "seconds", self.cfg.minutes * 60.0 * phase.share
        if self.cfg.steps is not None:
            return "steps", float(max(1, round(self.cfg.steps * phase.share)))
        return "steps", float(max(1, math.ceil(self.cfg.epochs * steps_per_epoch)))

    def _run_phase(self, model, opt, scaler, loss_fn, phase: Phase, counters: dict[str, Any]) -> None:
        cfg = self.cfg
        ds = DetectionDataset(phase.samples, cfg.image_size, self.norm["mean"], self.norm["std"], train=True)
        try:
            bs = global_batch(cfg.batch_size, len(ds), self.dist)
        except DistributedError as e:
            raise TrainError(str(e)) from e
        # the same global batches whatever the number of ranks, and a resume starts at the batch it stopped before
        epochs = ShardedEpochs(ds, bs, cfg.seed + 1000 * counters["phase"], self.dist, _collate)
        kind, budget = self._budget(phase, epochs.steps_per_epoch)
        done = lambda: (counters["phase_seconds"] if kind == "seconds" else counters["phase_step"]) >= budget
        capped = lambda: cfg.max_steps is not None and counters["steps"] >= cfg.max_steps
        label = f"{cfg.approach}" + (f" [{phase.name}]" if len(self.phases) > 1 else "")
        used = lambda: int(counters["phase_seconds"] if kind == "seconds" else counters["phase_step"])
        bar = tqdm(total=int(budget), disable=not cfg.progress or not self.dist.main, desc=label, dynamic_ncols=True,
                   unit="s" if kind == "seconds" else "step", initial=min(used(), int(budget)))
        last_save = time.perf_counter()
        model.train()
        world = self.dist.world_size
        for x, batch in epochs.batches(counters["phase_step"]):
            # every rank leaves after the same step: a time budget met on one rank, or a signal to one, stops all
            finished, signalled = agree_stop(self.dist, [done() or capped(), self._signals.requested is not None])
            if signalled:
                bar.close()
                raise _Stopped(self._signals.requested or "a stop request to another rank")
            if finished:
                break
            t0 = time.perf_counter()
            progress = (counters["phase_seconds"] if kind == "seconds" else counters["phase_step"]) / budget
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(progress)
            value = train_step(model, opt, scaler, loss_fn, phase, x, batch, self.device, self.amp,
                               counters["steps"], self.bf16)
            if self.dist.active:
                value = loss_fn.global_loss  # the loss of the global batch, the same on every rank
            dt = time.perf_counter() - t0
            counters["phase_step"] += 1
            counters["steps"] += 1
            counters["phase_seconds"] += dt
            counters["seconds"] += dt
            counters["images"] += len(batch) * world
            counters["loss"] = value if counters["loss"] is None else 0.9 * counters["loss"] + 0.1 * value
            self._log_step(counters, value, opt.param_groups[0]["lr"])
            bar.update(max(0, min(used(), int(budget)) - bar.n))
            bar.set_postfix(loss=f"{counters['loss']:.3f}", img_s=f"{len(batch) * world / dt:.1f}",
                            lr=f"{opt.param_groups[0]['lr']:.1e}")
            if time.perf_counter() - last_save > cfg.save_every_s:
                self._save_state(model, opt, counters)
                last_save = time.perf_counter()
        bar.close()

    def _finish(self, model, counters: dict[str, Any]) -> TrainResult:
        cfg = self.cfg
        model.eval()
        train_metrics = {"steps": counters["steps"], "images_seen": counters["images"],
                         "seconds": round(counters["seconds"], 1), "final_loss": counters["loss"],
                         "images_per_s": round(counters["images"] / max(counters["seconds"], 1e-9), 2),
                         "device": self.device.type, "amp": self.amp, "bf16": self.bf16,
                         "torch_threads": torch.get_num_threads(),
                         "world_size": self.dist.world_size, "backend": self.dist.backend}
        meta = {"model": cfg.model, "image_size": cfg.image_size, "layout": self.app.layout,
                "groups": [g.to_dict() for g in self.groups], "super_taxonomy": self.data.sup.to_dict(),
                "approach": cfg.approach, "normalisation": self.norm, "data": self.data.snapshot(),
                "training": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "device")},
                "metrics": {"train": train_metrics}}
        save_checkpoint(self.out, model, meta, dtype=cfg.dtype)
        metrics = meta["metrics"]
        if cfg.evaluate and self.data.split("val"):
            from inference.evaluate import evaluate_workspace
            from inference.predictor import Predictor

            predictor = Predictor.from_checkpoint(self.out, device=self.device)
            metrics["val"] = evaluate_workspace(self.ws, predictor, split="val", projects=cfg.projects).summary()
            meta_path = self.out / "model.json"
            full = json.loads(meta_path.read_text(encoding="utf-8"))
            full["metrics"] = metrics
            tmp = meta_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(full, indent=1), encoding="utf-8")
            os.replace(tmp, meta_path)
        version = json.loads((self.out / "model.json").read_text(encoding="utf-8"))["version"]
        model_id = None
        if cfg.register:
            from inference.registry import register_checkpoint

            model_id = register_checkpoint(self.ws, self.out)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        return TrainResult(self.out, version, model_id, metrics)


def _collate(batch):
    from inference.dataset import collate

    return collate(batch)


def _fingerprint(samples) -> str:
    """What the ranks must agree on: every image's content hash, boxes, nodes and weights."""
    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.image_id}:{s.sha256}:{s.project}:{','.join(s.nodes)}:".encode())
        h.update(np.ascontiguousarray(s.boxes, np.float32).tobytes())
        h.update(np.ascontiguousarray(s.box_weights, np.float32).tobytes())
    return h.hexdigest()


class _Stopped(Exception):
    """Every rank agreed to stop (a signal to one of them); the message names the signal."""


class _no_signals:
    """One process keeps Python's own Ctrl-C (KeyboardInterrupt, the state saved where it lands)."""

    requested = None

    def __enter__(self):
        return self

    def release(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


def train(ws: Workspace, out: str | Path, cfg: TrainConfig) -> TrainResult:
    """Train, save, evaluate on val and register; see the module docstring. Under torchrun every rank calls
    this; the process group is left when it returns."""
    try:
        return Trainer(ws, out, cfg).run()
    finally:
        teardown()

"""The follow trainer (`labeler train WS --out DIR --follow`): the model learns while people label.

One long-running process, on this machine or another one that sees the workspace:

* **Warm start.** It resumes its own state in `DIR/train_state` when there is one (a run stopped or killed
  before); else it starts from the latest registered model of the same configuration (model, input size,
  approach, head groups); else from the pretrained backbone.
* **Stream.** It trains on `inference.stream.SubmittedStream`: the submitted images of the train split,
  read again as annotators submit more (no restart), new images first and older ones replayed, loaded in
  a background thread.
* **Checkpoints.** Every `every_minutes` of training, every `every_images` newly submitted images (once each
  has been trained on), or every `every_steps` steps, the model is written to DIR as `labeler train` writes
  one (model.safetensors + model.json, with the optimizer in DIR/train_state) and evaluated on the frozen
  evaluation set, the stable **test** split (never trained on), overall and per cohort of submit time.
* **The gate.** The current model (the newest registered one, what the window uses) is scored on the same
  images. The checkpoint is registered as a new version only when it beats it by more than `min_delta` on
  `metric`; both figures, the set and the per-cohort figures are stored in the version's model.json and
  models row and, registered or not, in a `training_checkpoints` row. A registered version is copied to
  its own folder `DIR/versions/<version>/` first (the next checkpoint overwrites DIR), verified, and then
  its models row and its checkpoint row are written in one short transaction: a version is never half
  registered, whenever the process dies.
* **Stopping.** Ctrl-C, SIGTERM or a stop asked from the window (`trainer_runs.stop_requested_at`) end the
  run after the current step: its state is saved to DIR/train_state, the status row says `stopped`.
  SIGKILL loses only the steps since the last checkpoint.
* **Status.** A tqdm bar on the terminal, and a `trainer_runs` row updated every `heartbeat_s` seconds for
  the window's status bar.
* **Idle.** After `patience` checkpoints in a row that were not registered while no new image arrived,
  it waits for new submissions instead of spending the CPU the annotators' window needs.

Every write to the workspace is one short transaction (a heartbeat, a checkpoint row, a registration):
the window's own edits never wait for the trainer for more than milliseconds.

**Several ranks** (`--nproc N`, or torchrun; docs/distributed.md). Every rank runs this loop in lockstep with
DistributedDataParallel, and rank 0 alone decides: at each step boundary every rank reports (a stop signal it
received, images it could not read), rank 0 reads the stream, the window's stop request and the budgets and
broadcasts what every rank does next: train on a plan (the step's global batch: image ids, boxes and paths,
`--batch-size` images whatever N is, each rank loading its own share; inference/stream.py), wait for new
images, checkpoint or stop. At a checkpoint rank 0 alone writes, evaluates, applies the gate and registers,
while the other ranks wait for it (rank 0 tells them every few seconds that it is still evaluating, so the
wait is bounded by LABELER_DIST_TIMEOUT of silence, not by the length of the evaluation) and then continue
with the same weights. A rank that dies makes rank 0 save the state of the last finished step and stop;
the same command resumes. With one process all of this is the same code without the messages.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from inference.approaches import LossComputer, Phase, approach
from inference.architectures import build_detector
from inference.checkpoint import META, WEIGHTS, CheckpointError, load_checkpoint, save_checkpoint
from inference.dataset import TrainingData
from inference.distributed import (
    DistributedLoss,
    RunStopped,
    agree_on_value,
    agree_resume,
    broadcast_json,
    describe_failure,
    gather_ints,
    global_batch,
    is_peer_failure,
    setup,
    sync_batch_norm,
)
from inference.evaluate import DEFAULT_SCORE, score_detections
from inference.models import check_image_size, model_spec, resolve_pretrained
from inference.stream import LoadedBatch, PlanLoader, SubmittedStream
from inference.train import (
    STATE_DIR,
    TrainConfig,
    TrainError,
    load_state,
    restore_optimizer,
    save_state,
    train_step,
)
from projects import trainer_status
from projects.errors import LabelerError
from projects.imaging import read_image
from projects.store.target import display
from projects.workspace import Workspace

VERSIONS_DIR = "versions"
METRICS = ("mAP50", "mAP", "recall")
SAME_CONFIG_KEYS = ("model", "image_size", "layout", "approach", "groups")
DEFAULT_EVERY_MINUTES = 10.0
PLANS_AHEAD = 2  # global batches drawn ahead of training, so every rank's loader reads the next one meanwhile
MAX_REPORTED_FAILURES = 8  # unreadable images one rank reports per step boundary (the rest at the next ones)
TRACE_ENV = "LABELER_FOLLOW_TRACE"  # a path prefix: each rank appends what it trained on to PREFIX.rankR.jsonl


@dataclass
class FollowConfig:
    every_minutes: float | None = None  # training minutes between checkpoints (default when none is given)
    every_images: int | None = None  # newly submitted images between checkpoints (each trained on first)
    every_steps: int | None = None  # optimizer steps between checkpoints (benchmarks, tests)
    recent_share: float = 0.5  # share of each batch drawn from new images; the rest replays the whole pool
    recent_window: int = 64
    poll_s: float = 10.0  # how often the stream reads the workspace for new submissions
    heartbeat_s: float = 3.0  # how often the status row is written (and a stop request read)
    metric: str = "mAP50"
    min_delta: float = 0.0  # the gate: register when candidate > current + min_delta
    cohorts: int = 3  # equal cohorts of the evaluation set by submit time, oldest first
    patience: int = 3  # unregistered checkpoints with no new image before waiting for new ones (0: never)
    warmup_steps: int = 20
    max_checkpoints: int | None = None  # stop after this many checkpoints (tests, benchmarks)
    score_threshold: float = DEFAULT_SCORE

    def check(self) -> FollowConfig:
        given = [v for v in (self.every_minutes, self.every_images, self.every_steps) if v is not None]
        if len(given) > 1:
            raise TrainError("give at most one checkpoint cadence: --every-minutes, --every-images or --every-steps")
        if not given:
            self.every_minutes = DEFAULT_EVERY_MINUTES
        if any(v <= 0 for v in given):
            raise TrainError("the checkpoint cadence must be positive")
        if self.metric not in METRICS:
            raise TrainError(f"unknown gate metric {self.metric!r} (one of {', '.join(METRICS)})")
        if not 0.0 <= self.recent_share <= 1.0:
            raise TrainError(f"the share of new images must lie in 0..1, got {self.recent_share}")
        if self.cohorts < 1:
            raise TrainError("at least one cohort")
        return self


@dataclass
class Gate:
    metric: str
    candidate: float | None
    incumbent: float | None
    incumbent_model_id: int | None
    incumbent_version: str | None
    eval_images: int
    register: bool
    reason: str

    @property
    def delta(self) -> float | None:
        if self.candidate is None or self.incumbent is None:
            return None
        return self.candidate - self.incumbent


@dataclass
class CheckpointOutcome:
    index: int
    version: str
    steps: int
    images_seen: int
    pool_images: int
    loss: float | None
    gate: Gate
    model_id: int | None  # the registered model, when the gate let it through
    folder: Path | None  # its version folder
    cohorts: dict[str, Any] = field(default_factory=dict)
    eval_seconds: float = 0.0


@dataclass
class FollowResult:
    run_id: int
    steps: int
    images_seen: int
    checkpoints: list[CheckpointOutcome]
    stopped_by: str

    @property
    def registered(self) -> list[CheckpointOutcome]:
        return [c for c in self.checkpoints if c.model_id is not None]


def _nan_to_none(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def workspace_data(ws: Workspace, projects: list[str] | None) -> TrainingData:
    """The projects (fixed for the run), what each labels and its rules; no samples (the stream reads them)."""
    known = ws.project_names()
    names = projects or known
    unknown = [p for p in names if p not in known]
    if unknown:
        raise TrainError(f"no project named {unknown[0]!r} in {display(ws.location)} "
                         f"(projects: {', '.join(known) or 'none'})")
    labeled, rules = {}, {}
    for p in names:
        view = ws.project_view(p)
        labeled[p] = view.labeled_nodes
        rules[p] = dict(view.taxonomy.rules)
    return TrainingData(ws.super_taxonomy(), [], labeled, rules)


def cohort_split(ids_by_time: list[int], n: int) -> dict[str, list[int]]:
    """`n` cohorts of (nearly) equal size, oldest first, named c1..cn."""
    n = max(1, min(n, len(ids_by_time)))
    bounds = np.linspace(0, len(ids_by_time), n + 1).round().astype(int)
    return {f"c{k + 1}": ids_by_time[bounds[k]:bounds[k + 1]] for k in range(n)}


class FollowTrainer:
    def __init__(self, ws: Workspace, out: str | Path, cfg: TrainConfig, follow: FollowConfig | None = None,
                 stop: threading.Event | None = None):
        self.ws, self.out, self.cfg = ws, Path(out).absolute(), cfg
        self.follow = (follow or FollowConfig()).check()
        if cfg.epochs is not None:
            raise TrainError("--follow trains until stopped: give no --epochs (--minutes or --steps cap the run)")
        if any(b is not None and b <= 0 for b in (cfg.minutes, cfg.steps)):
            raise TrainError("the budget must be positive")
        check_image_size(cfg.image_size)
        self.spec = model_spec(cfg.model)
        self.app = approach(cfg.approach)
        self.dist, self.device = setup(cfg.device)  # under torchrun: this rank joins the run's process group
        self.amp = self.device.type == "cuda"
        global_batch(cfg.batch_size, cfg.batch_size, self.dist)  # the global batch must split evenly over the ranks
        self.stop = stop or threading.Event()
        self.stopped_by = ""
        self.data = workspace_data(ws, cfg.projects)
        self.groups = self.app.groups(self.data)
        if not self.groups:
            raise TrainError("no project labels any node: nothing to learn")
        phases = self.app.phases(self.data, self.groups, [])
        if len(phases) != 1 or phases[0].groups is not None:
            raise TrainError(f"--follow trains every head at once; approach {cfg.approach!r} trains its models one "
                             "after another (use tlm, naive or heads)")
        self.phase = Phase(None, [], 1.0)
        self.norm = self.spec.normalisation()
        self.group_dicts = [g.to_dict() for g in self.groups]
        self.run_id: int | None = None
        self.outcomes: list[CheckpointOutcome] = []
        self._incumbent: dict[str, Any] | None = None  # {"id", "version", "predictor", "dets": {image id: dets}}
        self.stream: SubmittedStream | None = None  # rank 0's alone
        self._queued: deque[dict[str, Any]] = deque()  # plans sent to the loaders and not trained on yet
        self._pending = "stop"  # what ended the last `train_steps`: stop, checkpoint or pause
        self._in_checkpoint = False
        self._trace = None
        # every rank must learn the same heads from the same projects: else all stop here, saying so
        agree_on_value(self.dist, json.dumps([self.identity(), {p: sorted(n) for p, n in self.data.labeled.items()},
                                              self.data.rules], sort_keys=True, default=str),
                       "projects, taxonomies or settings")

    # --- configuration identity -------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """What must match for a saved follow state to be resumed."""
        keys = ("approach", "model", "image_size", "projects", "batch_size", "pretrained", "seed", "ignore_band",
                "target_rules")
        return json.loads(json.dumps({"follow": True, **{k: getattr(self.cfg, k) for k in keys},
                                      "groups": self.group_dicts}))

    def _same_config(self, meta: dict[str, Any]) -> bool:
        mine = {"model": self.cfg.model, "image_size": self.cfg.image_size, "layout": self.app.layout,
                "approach": self.cfg.approach, "groups": self.group_dicts}
        return all(meta.get(k) == mine[k] for k in SAME_CONFIG_KEYS)

    # --- start ----------------------------------------------------------------------------------------
    def _warm_start(self, model) -> tuple[str, str | None, tuple | None]:
        """Load the starting weights into `model`; returns (where from, data cut time, resumed state)."""
        resumed = load_state(self.out / STATE_DIR)
        if resumed is not None:
            tensors, meta = resumed
            if meta.get("config") != self.identity():
                raise TrainError(f"{self.out / STATE_DIR}: a run with other settings was stopped here; rerun it "
                                 "with the same options, or delete that folder (or pick another --out) to start over")
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            return f"its own state in {self.out / STATE_DIR}", meta["counters"].get("cut_at"), resumed
        for row in reversed(self.ws.models()):
            meta = row.get("config")
            meta = json.loads(meta) if isinstance(meta, str) else (meta or {})
            if not self._same_config(meta):
                continue
            try:
                ck = load_checkpoint(self.ws.model_path(row), self.ws.super_taxonomy())
                model.load_state_dict(ck.model.state_dict())
            except (CheckpointError, RuntimeError) as e:
                print(f"warm start: model {row['version']} skipped ({e})")
                continue
            cut = (ck.meta.get("data") or {}).get("cut_at") or ck.meta.get("created_at") or row["created_at"]
            return f"model {row['version']}", cut, None
        return "the pretrained backbone", None, None

    def _start_main(self) -> tuple[Any, tuple | None, dict[str, Any]]:
        """Rank 0: refuse a second trainer on DIR, build the model and warm-start it; returns (model, resumed
        state, what the other ranks need to know)."""
        cfg = self.cfg
        for r in trainer_status.runs(self.ws):
            if r["alive"] and Path(r["out"]) == self.out:
                raise TrainError(f"a follow trainer (pid {r['pid']} on {r['host']}) is already writing to {self.out}; "
                                 "stop it first (or pick another --out)")
        self.out.mkdir(parents=True, exist_ok=True)
        pretrained = resolve_pretrained(self.spec, cfg.pretrained)
        has_start = (self.out / STATE_DIR / "state.json").is_file() or any(
            self._same_config(json.loads(r["config"]) if isinstance(r.get("config"), str) else {})
            for r in self.ws.models())
        model = build_detector(self.app.layout, cfg.model, self.groups, cfg.image_size,
                               "none" if has_start else pretrained).to(self.device)
        self.source, cut, resumed = self._warm_start(model)
        if self.source == "the pretrained backbone" and has_start:  # every candidate failed to load
            model = build_detector(self.app.layout, cfg.model, self.groups, cfg.image_size, pretrained).to(self.device)
        counters: dict[str, Any] = {"steps": 0, "images": 0, "seconds": 0.0, "loss": None, "checkpoints": 0,
                                    "cut_at": cut}
        if resumed is not None:
            counters.update(resumed[1]["counters"])
        return model, resumed, {"source": self.source, "counters": counters, "resumed": resumed is not None}

    def _start_other(self, info: dict[str, Any]) -> tuple[Any, tuple | None]:
        """Another rank: the same model (DistributedDataParallel copies rank 0's weights into it) and, on a resume,
        the optimizer state rank 0 resumed, read from DIR (storage every rank shares)."""
        model = build_detector(self.app.layout, self.cfg.model, self.groups, self.cfg.image_size,
                               "none").to(self.device)
        self.source = info["source"]
        if not info["resumed"]:
            return model, None
        resumed = load_state(self.out / STATE_DIR)
        if resumed is None or resumed[1].get("counters", {}).get("steps") != info["counters"]["steps"]:
            return model, None  # agree_resume then stops every rank, naming the shared storage
        model.load_state_dict({k[6:]: v for k, v in resumed[0].items() if k.startswith("model.")})
        return model, resumed

    def open(self) -> None:
        """Build the model (warm-started), the stream and the status row; then `train_steps`/`checkpoint`."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        ctx = self.dist
        if ctx.main:
            try:
                model, resumed, info = self._start_main()
            except Exception as e:
                broadcast_json(ctx, {"error": str(e)})  # the other ranks stop too, and say nothing
                raise
            broadcast_json(ctx, info)
        else:
            info = broadcast_json(ctx)
            if "error" in info:
                raise RunStopped(f"rank 0 could not start: {info['error']}")
            model, resumed = self._start_other(info)
        agree_resume(ctx, resumed[1]["counters"]["steps"] if resumed else (0 if not info["resumed"] else -1),
                     str(self.out / STATE_DIR))
        if self.device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        if ctx.active:  # batch norm over the global batch (before the optimizer: CUDA's converter makes modules)
            model = sync_batch_norm(model, self.device)
        self.model = model
        self.loss_fn = LossComputer(self.app, model, self.data, self.groups, cfg.ignore_band).to(self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        self.counters = dict(info["counters"])
        if resumed is not None:
            tensors, meta = resumed
            restore_optimizer(self.opt, tensors, meta)
        self.step_loss = self.loss_fn  # under DDP: the loss of this rank's share, scaled to the global batch's
        if ctx.active:
            self.step_loss = DistributedLoss(ctx, model, self.loss_fn, self.device,
                                             find_unused=self.app.layout != "single")
        torch.manual_seed(cfg.seed + ctx.rank)  # each rank's own randomness apart (augmentation has its own seeds)
        random.seed(cfg.seed + ctx.rank)
        np.random.seed(cfg.seed + ctx.rank)
        self.run_steps = 0  # steps of this process (the warm-up restarts with each run)
        self._since = {"steps": 0, "seconds": 0.0, "arrived": 0}
        self.loader = PlanLoader(cfg.image_size, self.norm["mean"], self.norm["std"], cfg.seed, ctx,
                                 root=self.ws.folder).start()
        trace = os.environ.get(TRACE_ENV)
        if trace:
            self._trace = open(f"{trace}.rank{ctx.rank}.jsonl", "a", encoding="utf-8")  # closed by close()
        if not ctx.main:
            self.bar = None
            return
        self.stream = SubmittedStream(self.data, target_rules=cfg.target_rules, seen_before=self.counters["cut_at"],
                                      recent_share=self.follow.recent_share, recent_window=self.follow.recent_window,
                                      poll_s=self.follow.poll_s, root=self.ws.folder)
        self._rng = np.random.default_rng(cfg.seed + self.counters["steps"])
        config = {"training": {k: v for k, v in asdict(cfg).items() if k not in ("progress",)},
                  "follow": asdict(self.follow), "warm_start": self.source, "world_size": ctx.world_size,
                  "backend": ctx.backend}
        self.run_id = trainer_status.start_run(self.ws, str(self.out), json.loads(json.dumps(config, default=str)))
        self._last_beat = 0.0
        self._quiet = 0  # checkpoints in a row not registered with no new image
        self._arrived_at_checkpoint = 0
        # on a terminal the bar redraws often; into a log file (the window's trainer) a line every 30 s is enough
        self.bar = tqdm(total=None, disable=not cfg.progress, desc="follow", unit="step", dynamic_ncols=True,
                        initial=self.counters["steps"], mininterval=0.1 if sys.stderr.isatty() else 30.0)
        ranks = f" on {ctx.describe()}, global batch {cfg.batch_size}" if ctx.active else ""
        self._say(f"follow trainer: run {self.run_id}{ranks}, warm start from {self.source}, checkpoints to {self.out}")
        self._beat("training", force=True, **({"message": f"training on {ctx.describe()}"} if ctx.active else {}))

    def _say(self, text: str) -> None:
        if self.cfg.progress and self.dist.main:
            tqdm.write(text)

    # --- status -------------------------------------------------------------------------------------------
    def _beat(self, state: str | None = None, force: bool = False, **extra: Any) -> None:
        """Write the status row (at most every heartbeat_s unless forced) and read a stop request."""
        now = time.monotonic()
        if not force and now - self._last_beat < self.follow.heartbeat_s:
            return
        self._last_beat = now
        st = self.stream.stats()
        c = self.counters
        fields = {"steps": c["steps"], "images_seen": c["images"], "pool_images": st.pool, "new_images": st.arrived,
                  "loss": c["loss"], "images_per_s": round(c["images"] / c["seconds"], 2) if c["seconds"] else None,
                  "checkpoints": c["checkpoints"], **extra}
        if state is not None:
            fields["state"] = state
        trainer_status.update_run(self.ws, self.run_id, **fields)
        if trainer_status.stop_requested(self.ws, self.run_id) and not self.stop.is_set():
            self.stopped_by = "a stop asked from the window"
            self.stop.set()
        if self._in_checkpoint and self.dist.active:  # the other ranks wait for the checkpoint: still here
            broadcast_json(self.dist, {"action": "evaluating"})

    # --- training -------------------------------------------------------------------------------------------
    def _lr(self) -> float:
        w = max(1, self.follow.warmup_steps)
        return self.cfg.lr * min(1.0, 0.1 + 0.9 * self.run_steps / w)

    def budget_left(self) -> bool:
        c = self.counters
        if self.cfg.steps is not None and c["steps"] >= self.cfg.steps:
            return False
        if self.cfg.minutes is not None and c["seconds"] >= self.cfg.minutes * 60:
            return False
        return not (self.cfg.max_steps is not None and c["steps"] >= self.cfg.max_steps)

    def train_steps(self, n: int | None = None) -> int:
        """Train until `n` steps are done (or, without `n`, until a checkpoint is due), the budget is spent or a
        stop is asked; returns the steps done. Waits (status `waiting`) while there is nothing to train on.
        On several ranks every rank calls it and they leave it together (`_pending` says why)."""
        done = 0
        waiting: str | None = None
        while True:
            msg = self._agree(until_checkpoint=n is None, left=None if n is None else n - done)
            action = msg["action"]
            if action == "wait":
                if self.dist.main:
                    if waiting != msg["why"]:
                        self._say("no new image since the last checkpoints and none of them was better: waiting for "
                                  "new submissions" if msg["why"] == "idle" else
                                  "waiting for submitted images (none in the train split yet)")
                    self._beat("waiting", message="waiting for new submitted images" if msg["why"] == "idle" else
                               "waiting for submitted images (none in the train split yet)")
                    self.stop.wait(0.5)
                else:
                    time.sleep(0.5)  # rank 0 decides when to go on, whatever signal this rank received
                waiting = msg["why"]
                continue
            if action != "step":
                self._pending = action
                return done
            if waiting and self.dist.main:
                self._beat("training", force=True, message="training")
            waiting = None
            self._step(self._queued.popleft(), self.loader.next())
            done += 1

    def _agree(self, until_checkpoint: bool, left: int | None) -> dict[str, Any]:
        """One step boundary: every rank reports, rank 0 decides, every rank receives the decision (and queues the
        new plans on its loader). One process: the same without the messages."""
        reported = self.loader.take_failures(MAX_REPORTED_FAILURES)  # any more at the next boundaries
        rows = gather_ints(self.dist, [1 if self.stop.is_set() else 0, len(reported), *(i for i, _ in reported)],
                           2 + MAX_REPORTED_FAILURES)
        msg = None
        if self.dist.main:
            why = dict(reported)
            for rank, row in enumerate(rows):
                if row[0] > 0 and not self.stop.is_set():
                    self.stopped_by = self.stopped_by or f"a stop signal to rank {rank}"
                    self.stop.set()
                for image_id in row[2:2 + row[1]]:
                    self.stream.leave_out(image_id, why.get(image_id) if rank == 0 else f"unreadable on rank {rank}")
            msg = self._next_action(until_checkpoint, left)
        msg = broadcast_json(self.dist, msg)
        for plan in msg.get("plans", ()):
            self._queued.append(plan)
            self.loader.submit(plan)
        return msg

    def _next_action(self, until_checkpoint: bool, left: int | None) -> dict[str, Any]:
        """Rank 0: what every rank does next (stop, checkpoint, pause, wait or step, with the plans drawn ahead)."""
        self.stream.maybe_refresh(self.ws)
        self._beat()  # also reads a stop asked from the window
        f = self.follow
        if self.stop.is_set():
            return {"action": "stop"}
        if f.max_checkpoints is not None and len(self.outcomes) >= f.max_checkpoints:
            self.stopped_by = self.stopped_by or f"{len(self.outcomes)} checkpoints done"
            return {"action": "stop"}
        if not self.budget_left():  # a last checkpoint of what was trained since the one before
            return {"action": "checkpoint" if until_checkpoint and self._since["steps"] > 0 else "stop"}
        if left is not None and left <= 0:
            return {"action": "pause"}
        if until_checkpoint and self.checkpoint_due():
            return {"action": "checkpoint"}
        if until_checkpoint and self._idle():
            return {"action": "wait", "why": "idle"}
        plans = []
        while len(self._queued) + len(plans) < PLANS_AHEAD:
            step = self.counters["steps"] + len(self._queued) + len(plans) + 1
            plan = self.stream.plan(self._rng, step, self.cfg.batch_size,
                                    spares=self.dist.world_size if self.dist.active else 0)
            if plan is None:
                break
            plans.append(plan)
        if not self._queued and not plans:
            return {"action": "wait", "why": "empty"}
        return {"action": "step", "plans": plans}

    def _step(self, plan: dict[str, Any], batch: LoadedBatch) -> None:
        """One optimizer step on this rank's share of `plan` (every rank at once under DDP)."""
        if batch.step != plan["step"]:
            raise TrainError(f"the loader handed out step {batch.step} for step {plan['step']}")
        for group in self.opt.param_groups:
            group["lr"] = self._lr()
        self.model.train()
        t0 = time.perf_counter()
        value = train_step(self.model, self.opt, self.scaler, self.step_loss, self.phase, batch.x, batch.targets,
                           self.device, self.amp, self.counters["steps"])
        if self.dist.active:
            value = self.step_loss.global_loss  # the loss of the global batch, the same on every rank
        dt = time.perf_counter() - t0
        c = self.counters
        images = len(plan["items"])
        c["steps"] += 1
        c["images"] += images
        c["seconds"] += dt
        c["loss"] = value if c["loss"] is None else 0.9 * c["loss"] + 0.1 * value
        self.run_steps += 1
        self._since["steps"] += 1
        self._since["seconds"] += dt
        if self._trace is not None:
            row = {"step": c["steps"], "rank": self.dist.rank, "world_size": self.dist.world_size,
                   "ids": [t["image_id"] for t in batch.targets], "loss": value, "images": c["images"],
                   "seconds": round(c["seconds"], 4)}
            if self.dist.main:
                row["plan"] = batch.plan_ids
            self._trace.write(json.dumps(row) + "\n")
            self._trace.flush()
        if not self.dist.main:
            return
        st = self.stream.stats()
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{c['loss']:.3f}", img_s=f"{images / dt:.1f}", pool=st.pool,
                             new=st.arrived, unseen=st.unseen, refresh=False)
        self._beat("training")

    def _idle(self) -> bool:
        p = self.follow.patience
        return bool(p) and self._quiet >= p and self.stream.stats().arrived == self._arrived_at_checkpoint

    def checkpoint_due(self) -> bool:
        f, s = self.follow, self._since
        if f.every_steps is not None:
            return s["steps"] >= f.every_steps
        if f.every_images is not None:
            st = self.stream.stats()
            drawn_not_trained = any(plan.get("fresh") for plan in self._queued)  # new images in a batch still ahead
            return (st.arrived - s["arrived"] >= f.every_images and st.unseen == 0 and not drawn_not_trained
                    and s["steps"] > 0)
        return s["seconds"] >= (f.every_minutes or DEFAULT_EVERY_MINUTES) * 60

    # --- checkpoint, evaluation, gate ----------------------------------------------------------------------
    def _meta(self, data: TrainingData) -> dict[str, Any]:
        c = self.counters
        st = self.stream.stats()
        snapshot = {**data.snapshot(), "cut_at": st.cut_at or c.get("cut_at"), "submitted_train_images": st.pool}
        train_metrics = {"steps": c["steps"], "images_seen": c["images"], "seconds": round(c["seconds"], 1),
                         "final_loss": c["loss"], "images_per_s": round(c["images"] / max(c["seconds"], 1e-9), 2),
                         "device": self.device.type, "amp": self.amp, "torch_threads": torch.get_num_threads(),
                         "follow": True, "warm_start": self.source, "checkpoint": c["checkpoints"],
                         "world_size": self.dist.world_size, "backend": self.dist.backend}
        return {"model": self.cfg.model, "image_size": self.cfg.image_size, "layout": self.app.layout,
                "groups": self.group_dicts, "super_taxonomy": self.data.sup.to_dict(), "approach": self.cfg.approach,
                "normalisation": self.norm, "data": snapshot,
                "training": {**{k: v for k, v in asdict(self.cfg).items() if k not in ("progress", "device")},
                             "follow": asdict(self.follow)},
                "metrics": {"train": train_metrics}}

    def _save_state(self) -> None:
        save_state(self.out / STATE_DIR, self.model, self.opt, {"config": self.identity(), "counters": self.counters})

    def _eval_set(self) -> tuple[list[int], dict[str, list[int]]]:
        revs = trainer_status.submitted_revisions(self.ws, list(self.data.labeled), "test")
        ids = sorted(revs, key=lambda i: (revs[i][2], i))
        return ids, cohort_split(ids, self.follow.cohorts) if ids else {}

    def _predict(self, predictor, ids: list[int], cache: dict[int, list] | None = None) -> dict[int, list]:
        out = {} if cache is None else cache
        todo = [i for i in ids if i not in out]
        for k in range(0, len(todo), 4):
            chunk = todo[k:k + 4]
            images = [read_image(self.ws.image_path(self.ws.image(i)["path"])) for i in chunk]
            for i, dets in zip(chunk, predictor.predict(images)):
                out[i] = dets
            self._beat()  # a long evaluation still shows signs of life and sees a stop request
            if self.stop.is_set():
                break
        return out

    def _incumbent_dets(self, ids: list[int]) -> tuple[dict[str, Any] | None, str | None]:
        """The current model (newest registered) and its detections on `ids` (cached per model)."""
        from inference.predictor import Predictor

        row = self.ws.latest_model()
        if row is None:
            self._incumbent = None
            return None, None
        if self._incumbent is None or self._incumbent["id"] != row["id"]:
            try:
                predictor = Predictor(load_checkpoint(self.ws.model_path(row), self.ws.super_taxonomy()),
                                      device=self.device)
            except CheckpointError as e:
                self._incumbent = None
                return None, f"the current model {row['version']} cannot be loaded ({e})"
            self._incumbent = {"id": row["id"], "version": row["version"], "predictor": predictor, "dets": {}}
        inc = self._incumbent
        self._predict(inc["predictor"], ids, inc["dets"])
        return inc, None

    def checkpoint(self) -> CheckpointOutcome | None:
        """Write the checkpoint to DIR, evaluate it and the current model on the frozen set, and register it
        when it is better (see the module docstring). Returns what happened (on rank 0; the other ranks wait for
        it and return None)."""
        if not self.dist.main:
            while broadcast_json(self.dist)["action"] != "checkpointed":
                pass  # rank 0 is still evaluating: its keep-alive bounds the wait, not the evaluation's length
            return None
        self._in_checkpoint = True
        try:
            outcome = self._checkpoint()
        finally:
            self._in_checkpoint = False
        broadcast_json(self.dist, {"action": "checkpointed", "version": outcome.version,
                                   "model_id": outcome.model_id})
        return outcome

    def _checkpoint(self) -> CheckpointOutcome:
        from inference.predictor import Predictor

        self._beat("evaluating", force=True, message="checkpoint: evaluating")
        t0 = time.perf_counter()
        c = self.counters
        c["checkpoints"] += 1
        meta = self._meta(self.stream.snapshot())
        self.model.eval()
        save_checkpoint(self.out, self.model, meta, dtype=self.cfg.dtype)
        self._save_state()
        self.model.train()
        st = self.stream.stats()
        self._since = {"steps": 0, "seconds": 0.0, "arrived": st.arrived}
        ck = load_checkpoint(self.out, self.ws.super_taxonomy())  # what was written is what is evaluated
        ids, cohorts = self._eval_set()
        metric = self.follow.metric
        figures: dict[str, Any] = {"eval_set": {"split": "test", "images": len(ids), "cohorts": cohorts}}
        cand_value = inc_value = None
        inc, inc_problem, cand_pred, cand_dets, complete = None, None, None, {}, True
        if ids:
            cand_pred = Predictor(ck, device=self.device)
            cand_dets = self._predict(cand_pred, ids)
            inc, inc_problem = self._incumbent_dets(ids)
            complete = all(i in cand_dets for i in ids) and (inc is None or all(i in inc["dets"] for i in ids))
        if ids and complete:
            cand, cand_parts = score_detections(self.ws, cand_dets, ck.node_names, list(self.data.labeled),
                                                self.follow.score_threshold, cohorts)
            figures["candidate"] = {**_compact(cand.summary()), "cohorts": _jsonable(cand_parts)}
            cand_value = _nan_to_none(figures["candidate"][metric])
            if inc is not None:
                r, parts = score_detections(self.ws, {i: inc["dets"][i] for i in ids}, inc["predictor"].node_names,
                                            list(self.data.labeled), self.follow.score_threshold, cohorts)
                figures["incumbent"] = {**_compact(r.summary()), "cohorts": _jsonable(parts),
                                        "version": inc["version"], "model_id": inc["id"]}
                inc_value = _nan_to_none(figures["incumbent"][metric])
        gate = self._decide(metric, cand_value, inc_value, inc, inc_problem, len(ids))
        if not complete:
            gate.register, gate.reason = False, "stopped during the evaluation: not registered"
        figures["gate"] = _jsonable(asdict(gate) | {"delta": gate.delta, "min_delta": self.follow.min_delta})
        model_id = folder = None
        if gate.register:
            folder, model_id = self._register(ck, meta, figures, gate)
            # the new current model is this candidate: its detections on the set are known already
            self._incumbent = {"id": model_id, "version": ck.version, "predictor": cand_pred, "dets": cand_dets}
        else:
            trainer_status.add_checkpoint(self.ws, self.run_id, **self._checkpoint_row(ck.version, gate, figures, None))
        new_data = st.arrived != self._arrived_at_checkpoint
        self._quiet = 0 if (model_id is not None or new_data) else self._quiet + 1
        self._arrived_at_checkpoint = st.arrived
        outcome = CheckpointOutcome(c["checkpoints"], ck.version, c["steps"], c["images"], st.pool, c["loss"], gate,
                                    model_id, folder, figures.get("candidate", {}).get("cohorts", {}),
                                    time.perf_counter() - t0)
        self.outcomes.append(outcome)
        self._say(self._describe(outcome))
        self._beat("training", force=True, message=gate.reason,
                   registered=sum(o.model_id is not None for o in self.outcomes))
        return outcome

    def _decide(self, metric: str, cand: float | None, inc: float | None, inc_row, problem: str | None,
                n: int) -> Gate:
        iid, iver = (inc_row["id"], inc_row["version"]) if inc_row else (None, None)
        if n == 0:
            return Gate(metric, None, None, iid, iver, 0, False,
                        "kept training: no submitted image in the test split yet, nothing to evaluate on")
        if cand is None:
            return Gate(metric, None, inc, iid, iver, n, False,
                        f"kept training: the test split holds no box this model can be scored on ({metric} undefined)")
        if inc_row is None:  # no usable model: the window shows no pre-labels, which scores 0
            why = problem or "no model registered yet"
            if cand > self.follow.min_delta:
                return Gate(metric, cand, None, None, None, n, True, f"registered: {metric} {cand:.3f} ({why})")
            return Gate(metric, cand, None, None, None, n, False,
                        f"kept training: {metric} {cand:.3f} is no better than no model ({why})")
        if inc is None or cand > inc + self.follow.min_delta:
            was = "undefined" if inc is None else f"{inc:.3f}"
            return Gate(metric, cand, inc, iid, iver, n, True,
                        f"registered: {metric} {cand:.3f} against {was} for {iver} on {n} test images")
        return Gate(metric, cand, inc, iid, iver, n, False,
                    f"kept training: {metric} {cand:.3f} does not beat {inc:.3f} of {iver} on {n} test images")

    def _checkpoint_row(self, version: str, gate: Gate, figures: dict[str, Any], model_id: int | None) -> dict:
        c = self.counters
        return {"version": version, "steps": c["steps"], "images_seen": c["images"],
                "pool_images": self.stream.stats().pool, "loss": c["loss"], "seconds": round(c["seconds"], 1),
                "eval_images": gate.eval_images, "metric": gate.metric, "candidate": gate.candidate,
                "incumbent": gate.incumbent, "incumbent_model_id": gate.incumbent_model_id,
                "registered_model_id": model_id, "decision": gate.reason, "figures": _jsonable(figures)}

    def _register(self, ck, meta: dict[str, Any], figures: dict[str, Any], gate: Gate) -> tuple[Path, int]:
        """Copy the checkpoint to its own version folder with the gate's figures, verify it, then write its models
        row and its checkpoint row in one transaction (a kill before leaves an unregistered folder, never a row
        without its files)."""
        from inference.registry import ensure_registered

        version = ck.version
        metrics = dict(meta["metrics"])
        metrics["test"] = {k: v for k, v in figures["candidate"].items() if k != "cohorts"}
        metrics["gate"] = _jsonable({k: v for k, v in figures["gate"].items()} |
                                    {"incumbent_figures": {k: v for k, v in figures.get("incumbent", {}).items()
                                                           if k != "cohorts"},
                                     "cohorts": {"candidate": figures["candidate"].get("cohorts", {}),
                                                 "incumbent": figures.get("incumbent", {}).get("cohorts", {})}})
        full = json.loads((self.out / META).read_text(encoding="utf-8"))
        full["metrics"] = metrics
        versions = self.out / VERSIONS_DIR
        versions.mkdir(exist_ok=True)
        final = versions / version
        tmp = versions / f".tmp-{version}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            os.link(self.out / WEIGHTS, tmp / WEIGHTS)  # the next checkpoint replaces DIR's file, not this inode
        except OSError:
            shutil.copy2(self.out / WEIGHTS, tmp / WEIGHTS)
        (tmp / META).write_text(json.dumps(full, indent=1), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        verified = load_checkpoint(final, self.ws.super_taxonomy())  # outside the transaction: it takes a while
        with self.ws.transaction():
            reg = ensure_registered(self.ws, final, verified)
            trainer_status.add_checkpoint(self.ws, self.run_id,
                                          **self._checkpoint_row(version, gate, figures, reg.model_id))
            trainer_status.update_run(self.ws, self.run_id, model_id=reg.model_id)
        return final, reg.model_id

    def _describe(self, o: CheckpointOutcome) -> str:
        g = o.gate
        head = f"checkpoint {o.index} at step {o.steps} ({o.pool_images} images in the stream)"
        if o.model_id is not None:
            return f"{head}: {g.reason} -> model {o.model_id} ({o.version}) in {o.folder}"
        return f"{head}: {g.reason}"

    # --- the whole run --------------------------------------------------------------------------------------
    def close(self, state: str = "stopped", message: str | None = None) -> None:
        """Stop the loader, save the state for a resume, and say so in the status row (rank 0)."""
        self.loader.close()
        if self._trace is not None:
            self._trace.close()
            self._trace = None
        if not self.dist.main:
            return
        if state != "failed":
            self._save_state()
        self.bar.close()
        if self.run_id is not None:
            trainer_status.update_run(self.ws, self.run_id, state=state, ended_at=_now(),
                                      message=message or f"stopped ({self.stopped_by or 'its budget is spent'})",
                                      **self._final_fields())

    def _final_fields(self) -> dict[str, Any]:
        c = self.counters
        return {"steps": c["steps"], "images_seen": c["images"], "loss": c["loss"], "checkpoints": c["checkpoints"]}

    def run(self) -> FollowResult:
        """Open, then train and checkpoint until stopped (or the budget or `max_checkpoints` is spent)."""
        self.open()
        try:
            while True:
                self.train_steps()
                if self._pending != "checkpoint":
                    break
                self.checkpoint()
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                self.stopped_by = "Ctrl-C"
                self.close("stopped")
                raise
            if self.dist.active and isinstance(e, RuntimeError) and not isinstance(e, LabelerError) \
                    and is_peer_failure(e):
                # another rank went away: no optimizer stepped in the step it broke, so the state is the last
                # finished step's; rank 0 saves it and the same command resumes from there
                steps = self.counters["steps"]
                text = (f"another rank stopped during step {steps + 1} ({describe_failure(e)}); state of step {steps} "
                        f"saved to {self.out / STATE_DIR}; run the same command to resume")
                self.stopped_by = self.stopped_by or "another rank went away"
                try:
                    self.close("stopped", f"stopped: {text}")
                except Exception:
                    pass
                raise RunStopped(text) from None
            try:
                self.close("failed", f"failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            except Exception:
                pass
            raise
        if not self.stopped_by:
            self.stopped_by = "its budget is spent"
        self.close("stopped")
        return FollowResult(self.run_id, self.counters["steps"], self.counters["images"], self.outcomes,
                            self.stopped_by)


def _compact(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("mAP50", "mAP", "recall", "score_threshold", "images", "gt_boxes", "per_project")
    out = {k: summary[k] for k in keep if k in summary}
    out["per_node"] = {n: {"ap50": v["ap50"], "recall": v["recall"], "gt": v["gt"]}
                       for n, v in summary.get("per_node", {}).items()}
    return _jsonable(out)


def _jsonable(value: Any) -> Any:
    """NaN becomes None (JSON has no NaN; the window and the report read these)."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _now() -> str:
    from projects.workspace import now

    return now()


def follow(ws: Workspace, out: str | Path, cfg: TrainConfig, follow_cfg: FollowConfig | None = None,
           stop: threading.Event | None = None) -> FollowResult:
    """Run the follow trainer until stopped; see the module docstring."""
    return FollowTrainer(ws, out, cfg, follow_cfg, stop).run()


__all__ = ["CheckpointOutcome", "FollowConfig", "FollowResult", "FollowTrainer", "Gate", "follow"]

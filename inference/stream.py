"""The follow trainer's data: the workspace's submitted images as an endless stream that sees new ones.

`SubmittedStream` is the pool. It reads the submitted images of the train split, and every `poll_s` seconds
asks the workspace which images were submitted, re-submitted or edited since
(`projects.trainer_status.submitted_revisions`, one indexed query): those are read again, images no longer
submitted leave the pool. The trainer is never restarted to see new data.

What each item is drawn from:

* with probability `recent_share`, the **new** data: first every image the model has not trained on yet
  (oldest first, so every submitted image becomes training data within one pass), then, once none is
  left, the newest `recent_window` images;
* otherwise **replay**: any image of the pool, uniformly, so the model keeps seeing the older data and does
  not forget it when the stream shifts to a new domain.

Images submitted before the warm-start model's data were cut (`seen_before`) count as already trained on.

**Plans.** Only the trainer's rank 0 reads the pool: it draws each step's global batch as a *plan* (the step
number and every image's boxes, weights and path, as JSON) and sends it to the other ranks. A path under the
workspace folder (a team workspace's image root) travels relative to it and each rank finds the file under its
own (LABELER_IMAGE_ROOT: another machine may mount the image root elsewhere). `PlanLoader`
(on every rank, one process included) reads and augments its own share of each plan in a background thread
(asynchronous loading: the training step does not wait on JPEG decoding when the CPU has room): the images
at positions rank, rank + N, … of the plan, each augmented from a seed of (run seed, step, position), so a
step trains on the same images with the same augmentation whatever the number of ranks. Nothing here holds
a write lock: the stream only reads, so the window and the trainer never wait on each other here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.dataset import DetectionDataset, Sample, TrainingData, collate, make_sample
from inference.distributed import DistContext, DistributedError, item_seed
from projects.trainer_status import submitted_revisions
from projects.workspace import Workspace

log = logging.getLogger(__name__)
_GLOBAL_RNG = threading.Lock()  # the loaders of one process take turns with torch's global generator


@dataclass(frozen=True)
class StreamStats:
    pool: int  # images the stream draws from now
    arrived: int  # images submitted (or changed) since the stream started
    unseen: int  # images in the pool not trained on yet
    skipped: int  # submitted images whose file is missing or unreadable (left out)
    cut_at: str  # the latest submit time among the pool's images ("" when empty)
    refreshes: int


class SubmittedStream:
    """The pool of submitted training images (rank 0's alone); see the module docstring."""

    def __init__(self, data: TrainingData, *, split: str = "train", target_rules: dict[str, Any] | None = None,
                 seen_before: str | None = None, recent_share: float = 0.5, recent_window: int = 64,
                 poll_s: float = 10.0, root: Path | None = None):
        if not 0.0 <= recent_share <= 1.0:
            raise ValueError(f"recent_share must lie in 0..1, got {recent_share}")
        self.data = data  # projects (fixed for the run), their labeled nodes and rules, the super-taxonomy
        self.split = split
        self.target_rules = target_rules
        self.seen_before = seen_before
        self.recent_share = float(recent_share)
        self.recent_window = max(1, int(recent_window))
        self.poll_s = float(poll_s)
        self.root = root  # the workspace folder or image root: plans name the files under it relative to it
        self._lock = threading.Lock()
        self.samples: dict[int, Sample] = {}
        self._revisions: dict[int, str] = {}
        self._submitted: dict[int, str] = {}
        self._order: list[int] = []  # pool ids by submit time, oldest first
        self._unseen: deque[int] = deque()
        self._skipped: dict[int, str] = {}  # image id -> why (retried when its revision changes)
        self.trained_on: dict[int, int] = {}  # image id -> times drawn
        self._arrived = 0
        self._refreshes = 0
        self._poke = threading.Event()
        self._last_refresh = -float("inf")
        self.ignored_projects: set[str] = set()

    # --- the pool ----------------------------------------------------------------------------------
    def refresh(self, ws: Workspace) -> tuple[list[int], list[int]]:
        """Read what changed in the workspace; returns (image ids added or changed, ids removed)."""
        revs = submitted_revisions(ws, None, self.split)
        first = self._refreshes == 0
        changed: list[tuple[int, Sample | None, str, str]] = []
        for image_id, (project, rev, submitted) in revs.items():
            if project not in self.data.labeled:
                self.ignored_projects.add(project)  # a project added after the start: next run
                continue
            if self._revisions.get(image_id) == rev:
                continue
            sample = make_sample(ws, image_id, project, self.data.rules.get(project, {}), self.data.sup,
                                 self.target_rules)
            changed.append((image_id, sample, rev, submitted))
        gone = [i for i in self._revisions if i not in revs]
        with self._lock:
            for image_id in gone:
                self._drop(image_id)
                self._revisions.pop(image_id, None)
            for image_id, sample, rev, submitted in changed:
                self._revisions[image_id] = rev
                known = image_id in self.samples
                if not sample.path.is_file():
                    self._drop(image_id)
                    self._skipped[image_id] = f"{sample.path}: file not found"
                    continue
                self._skipped.pop(image_id, None)
                self.samples[image_id] = sample
                self._submitted[image_id] = submitted
                if not known:
                    self._order.append(image_id)
                trained = first and (self.seen_before is None or submitted <= self.seen_before)
                if not trained:
                    self._arrived += 0 if first else 1
                    if image_id not in self._unseen:
                        self._unseen.append(image_id)
            if changed:
                self._order.sort(key=lambda i: (self._submitted[i], i))
            self._refreshes += 1
        return [c[0] for c in changed], gone

    def _drop(self, image_id: int) -> None:
        self.samples.pop(image_id, None)
        self._submitted.pop(image_id, None)
        if image_id in self._order:
            self._order.remove(image_id)
        if image_id in self._unseen:
            self._unseen.remove(image_id)

    def poke(self) -> None:
        """Read the workspace again before the next item (instead of waiting for `poll_s`)."""
        self._poke.set()

    def stats(self) -> StreamStats:
        with self._lock:
            cut = max(self._submitted.values(), default="")
            return StreamStats(len(self.samples), self._arrived, len(self._unseen), len(self._skipped), cut,
                               self._refreshes)

    def snapshot(self) -> TrainingData:
        """The pool as training data (for the checkpoint's data record: counts, fingerprint, node positives)."""
        with self._lock:
            samples = [self.samples[i] for i in self._order]
        return TrainingData(self.data.sup, samples, self.data.labeled, self.data.rules)

    def pick(self, rng: np.random.Generator) -> Sample | None:
        """The next sample to train on (see the module docstring), or None while the pool is empty."""
        with self._lock:
            if not self._order:
                return None
            if rng.random() < self.recent_share:
                if self._unseen:
                    image_id = self._unseen.popleft()
                else:
                    recent = self._order[-self.recent_window:]
                    image_id = recent[int(rng.integers(len(recent)))]
            else:
                image_id = self._order[int(rng.integers(len(self._order)))]
                if image_id in self._unseen:
                    self._unseen.remove(image_id)
            self.trained_on[image_id] = self.trained_on.get(image_id, 0) + 1
            return self.samples[image_id]

    def maybe_refresh(self, ws: Workspace) -> bool:
        """Read the workspace when `poll_s` has passed since the last read (or `poke` asked); True if it did."""
        if not self._poke.is_set() and time.monotonic() - self._last_refresh < self.poll_s:
            return False
        self._poke.clear()
        self.refresh(ws)
        self._last_refresh = time.monotonic()
        return True

    def leave_out(self, image_id: int, why: str) -> None:
        """An image that could not be read: out of the pool until it changes (a new revision is read again)."""
        with self._lock:
            if image_id in self.samples:
                log.warning("follow stream: image %s left out (%s)", image_id, why)
            self._drop(image_id)
            self._skipped[image_id] = why

    def plan(self, rng: np.random.Generator, step: int, size: int, spares: int = 0) -> dict[str, Any] | None:
        """The global batch of `step`: `size` picks (see the module docstring) and `spares` replayed images a rank
        loads only when none of its share can be read; None while the pool is empty."""
        with self._lock:
            unseen_before = set(self._unseen)
        picks = [self.pick(rng) for _ in range(size)]
        if any(p is None for p in picks):
            return None
        spare_rng = np.random.default_rng([int(step), spares])  # not from `rng`: a plan's picks never depend on N
        with self._lock:
            spare = [self.samples[self._order[int(spare_rng.integers(len(self._order)))]] for _ in range(spares)]
        fresh = sorted({p.image_id for p in picks} & unseen_before)
        return {"step": int(step), "items": [sample_to_dict(p, self.root) for p in picks],
                "spares": [sample_to_dict(p, self.root) for p in spare], "fresh": fresh}


def sample_to_dict(s: Sample, root: Path | None = None) -> dict[str, Any]:
    """A sample as JSON-ready values (float32 boxes and weights survive the round trip exactly). A file under
    `root` is named relative to it: the rank that loads it finds it under its own root."""
    path = s.path.relative_to(root).as_posix() if root is not None and s.path.is_relative_to(root) else str(s.path)
    return {"id": s.image_id, "path": path, "width": s.width, "height": s.height, "project": s.project,
            "split": s.split, "sha256": s.sha256, "boxes": s.boxes.tolist(), "nodes": list(s.nodes),
            "weights": s.box_weights.tolist()}


def sample_from_dict(d: dict[str, Any], root: Path | None = None) -> Sample:
    """The sample `sample_to_dict` wrote; a relative path is taken under `root` (this rank's own)."""
    path = Path(d["path"])
    if root is not None and not path.is_absolute():
        path = root / path
    return Sample(int(d["id"]), path, int(d["width"]), int(d["height"]), d["project"], d["split"],
                  d["sha256"], np.asarray(d["boxes"], np.float32).reshape(-1, 4), tuple(d["nodes"]),
                  np.asarray(d["weights"], np.float32))


class UnreadableShare(DistributedError):
    """None of a rank's images of one step (its spare included) could be read."""


@dataclass
class LoadedBatch:
    step: int
    x: torch.Tensor | None  # None: nothing of this rank's share could be read (see `error`)
    targets: list[dict[str, Any]]
    plan_ids: list[int]  # the whole global batch, in plan order
    error: str | None = None


class PlanLoader:
    """This rank's share of each plan, read and augmented in a background thread, handed out in plan order.

    Images that cannot be read are left out of the batch (the loss is normalised over what every rank
    actually has) and listed in `failures` for rank 0 to take out of the pool; a share with nothing readable
    takes the rank's spare image instead."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], seed: int, ctx: DistContext,
                 augment: bool = True, root: Path | None = None):
        self._items = DetectionDataset([], image_size, mean, std, train=augment)
        self.seed, self.ctx = int(seed), ctx
        self.root = root  # this rank's workspace folder or image root: where a plan's relative paths lie
        self._plans: queue.Queue = queue.Queue()
        self._ready: queue.Queue = queue.Queue()
        self._failures: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labeler-follow-loader", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> PlanLoader:
        self._thread.start()
        return self

    def submit(self, plan: dict[str, Any]) -> None:
        self._plans.put(plan)

    def take_failures(self, limit: int) -> list[tuple[int, str]]:
        """Up to `limit` images this rank could not read and has not reported yet: (image id, why)."""
        with self._lock:
            out, self._failures = self._failures[:limit], self._failures[limit:]
        return out

    def _load(self, d: dict[str, Any], step: int, position: int):
        # torchvision's transforms draw from torch's global generator: seeded per image, one image at a time
        with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, step, position))
            return self._items.item(sample_from_dict(d, self.root))

    def _where(self, d: dict[str, Any]) -> Path:
        return sample_from_dict(d, self.root).path

    def _batch(self, plan: dict[str, Any]) -> LoadedBatch:
        step, items = int(plan["step"]), plan["items"]
        loaded, problem = [], None
        for position in range(self.ctx.rank, len(items), self.ctx.world_size):
            try:
                loaded.append(self._load(items[position], step, position))
            except Exception as e:  # an unreadable file: left out here, and out of the pool by rank 0
                problem = f"{self._where(items[position])}: {e}"
                with self._lock:
                    self._failures.append((int(items[position]["id"]), problem))
        spares = plan.get("spares") or []
        if not loaded and self.ctx.rank < len(spares):
            try:
                loaded.append(self._load(spares[self.ctx.rank], step, len(items) + self.ctx.rank))
            except Exception as e:
                problem = f"{self._where(spares[self.ctx.rank])}: {e}"
        ids = [int(d["id"]) for d in items]
        if not loaded:
            return LoadedBatch(step, None, [], ids, problem or "an empty share")
        x, targets = collate(loaded)
        return LoadedBatch(step, x, targets, ids)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    plan = self._plans.get(timeout=0.2)
                except queue.Empty:
                    continue
                self._ready.put(self._batch(plan))
        except BaseException as e:  # handed to the trainer, which reports it
            self.error = e

    def next(self) -> LoadedBatch:
        """The batch of the oldest submitted plan (waits for it)."""
        while True:
            if self.error is not None:
                raise self.error
            try:
                batch = self._ready.get(timeout=0.5)
            except queue.Empty:
                if not self._thread.is_alive() and self.error is None:
                    raise RuntimeError("the follow loader thread ended") from None
                continue
            if batch.x is None:
                raise UnreadableShare(f"rank {self.ctx.rank} could not read any image of its share of step "
                                      f"{batch.step} ({batch.error}): every rank must see the image files at the "
                                      "same paths")
            return batch

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

"""The follow trainer's data: the workspace's submitted images as an endless stream that sees new ones.

`SubmittedStream` is a torch `IterableDataset`. It reads the submitted images of the train split through
its own workspace connection, and every `poll_s` seconds asks the workspace which images were submitted,
re-submitted or edited since (`projects.trainer_status.submitted_revisions`, one indexed query): those are
read again, images no longer submitted leave the pool. The trainer is never restarted to see new data.

What each item is drawn from:

* with probability `recent_share`, the **new** data: first every image the model has not trained on yet
  (oldest first, so every submitted image becomes training data within one pass), then, once none is
  left, the newest `recent_window` images;
* otherwise **replay**: any image of the pool, uniformly, so the model keeps seeing the older data and does
  not forget it when the stream shifts to a new domain.

Images submitted before the warm-start model's data were cut (`seen_before`) count as already trained on.

`BatchPrefetcher` reads and augments the next batches in a background thread (asynchronous loading: the
training step never waits on JPEG decoding when the CPU has room). Neither holds a write lock: the stream
only reads, so the window and the trainer never wait on each other here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from inference.dataset import DetectionDataset, Sample, TrainingData, collate, make_sample
from projects.trainer_status import submitted_revisions
from projects.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamStats:
    pool: int  # images the stream draws from now
    arrived: int  # images submitted (or changed) since the stream started
    unseen: int  # images in the pool not trained on yet
    skipped: int  # submitted images whose file is missing or unreadable (left out)
    cut_at: str  # the latest submit time among the pool's images ("" when empty)
    refreshes: int


class SubmittedStream(IterableDataset):
    def __init__(self, folder: str | Path, data: TrainingData, image_size: int, mean: Sequence[float],
                 std: Sequence[float], *, split: str = "train", target_rules: dict[str, Any] | None = None,
                 seen_before: str | None = None, recent_share: float = 0.5, recent_window: int = 64,
                 poll_s: float = 10.0, seed: int = 0, augment: bool = True,
                 stop: threading.Event | None = None):
        super().__init__()
        if not 0.0 <= recent_share <= 1.0:
            raise ValueError(f"recent_share must lie in 0..1, got {recent_share}")
        self.folder = Path(folder)
        self.data = data  # projects (fixed for the run), their labeled nodes and rules, the super-taxonomy
        self.split = split
        self.target_rules = target_rules
        self.seen_before = seen_before
        self.recent_share = float(recent_share)
        self.recent_window = max(1, int(recent_window))
        self.poll_s = float(poll_s)
        self.seed = seed
        self.stop = stop or threading.Event()
        self._items = DetectionDataset([], image_size, mean, std, train=augment)
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

    # --- the iterable --------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng(self.seed + (info.id if info else 0))
        ws = Workspace.open(self.folder)
        try:
            last = -float("inf")
            while not self.stop.is_set():
                if self._poke.is_set() or time.monotonic() - last >= self.poll_s:
                    self._poke.clear()
                    self.refresh(ws)
                    last = time.monotonic()
                sample = self.pick(rng)
                if sample is None:  # nothing submitted yet: wait for the annotators
                    self.stop.wait(min(self.poll_s, 1.0))
                    continue
                try:
                    yield self._items.item(sample)
                except Exception as e:  # an unreadable file: leave it out until it changes, go on
                    log.warning("follow stream: %s left out (%s)", sample.path, e)
                    with self._lock:
                        self._drop(sample.image_id)
                        self._skipped[sample.image_id] = str(e)
        finally:
            ws.close()


class BatchPrefetcher:
    """Collated batches of an iterable dataset, prepared `depth` ahead in a background thread."""

    def __init__(self, dataset: SubmittedStream, batch_size: int, depth: int = 2):
        self.dataset, self.batch_size = dataset, int(batch_size)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._thread = threading.Thread(target=self._run, name="labeler-follow-loader", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> BatchPrefetcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            items = []
            for item in self.dataset:
                items.append(item)
                if len(items) == self.batch_size:
                    batch, items = collate(items), []
                    while not self.dataset.stop.is_set():
                        try:
                            self._queue.put(batch, timeout=0.2)
                            break
                        except queue.Full:
                            continue
        except BaseException as e:  # handed to the trainer, which reports it
            self.error = e

    def get(self, timeout: float = 0.5):
        """The next batch, or None when none is ready within `timeout` (the caller checks for a stop)."""
        if self.error is not None:
            raise self.error
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self, timeout: float = 10.0) -> None:
        self.dataset.stop.set()
        self._thread.join(timeout)

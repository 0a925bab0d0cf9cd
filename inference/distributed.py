"""Training and batch prediction on several processes: torchrun, DistributedDataParallel, nothing home-made.

A process started by `torchrun` (or `labeler train --nproc N`, which launches torchrun for one machine) finds
RANK, LOCAL_RANK and WORLD_SIZE in its environment; `setup()` joins the process group (NCCL on GPUs, gloo on
CPU) and says which rank and device this process is. Without those variables (or with WORLD_SIZE 1) every
helper here is a no-op and training runs as one process, exactly as before.

What makes N ranks train like one process with the same global batch (tests/test_distributed.py checks the
loss trajectories agree):
- **One global batch.** `--batch-size` is the global batch; each rank takes batch / N images per step.
- **The same images per step.** `ShardedEpochs` shuffles with torch's `DistributedSampler` (seeded by the run's
  seed and the epoch): step k's global batch is positions [k*B, (k+1)*B) of the epoch's permutation, rank r
  taking every N-th of them, whatever N is. A resumed run starts at the exact batch where it stopped.
- **Per-image augmentation seeds.** An image's augmentation is drawn from a seed of (run seed, epoch, image),
  so it does not depend on which rank loads it; each rank's own randomness is seeded with seed + rank.
- **A global loss normaliser.** effdet divides the focal and box losses by (positive anchors + 1) of the
  batch; `LossComputer` (inference/approaches.py) divides by that count over *every* rank's batch and scales
  by N, so DDP's gradient average is the gradient of the one-process loss.
- **Synchronised batch norm.** torch's `SyncBatchNorm` on CUDA (timm's converter keeps the fused activations);
  on CPU, where torch has none, batch statistics are summed over ranks with torch's differentiable
  `all_reduce` (its functional collectives).

Every rank opens the workspace itself, by the same argument: a SQLite folder on shared storage or a PostgreSQL
team workspace's URL (credentials from libpq's environment, which torchrun passes on; each rank's connections
are named `labeler rank R/N`). Image files are found under each rank's own workspace folder or image root
(LABELER_IMAGE_ROOT where a machine mounts it elsewhere).

Rank 0 alone writes: training state, the step log, the checkpoint, its evaluation and the registration. A
stop (Ctrl-C, SIGTERM from torchrun or a scheduler) is agreed by every rank at a step boundary so they all
stop after the same step; a rank that dies makes the others' next collective fail, and rank 0 then saves the
state of the last step every rank finished. Either way the same command resumes.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from projects.errors import LabelerError

TIMEOUT_ENV = "LABELER_DIST_TIMEOUT"  # seconds a collective waits for a silent rank (default 600)
APPNAME_ENV = "PGAPPNAME"  # libpq's application name: what a team workspace's server calls this rank


class DistributedError(LabelerError, RuntimeError):
    """The ranks cannot start, disagree, or one of them went away; the message says which and what to do."""


class RunStopped(DistributedError):
    """Every rank stopped after the same step (a signal, or another rank that went away); the state is saved."""


class LauncherStopped(DistributedError):
    """`--nproc`'s torchrun was sent SIGINT or SIGTERM: it passed the signal on to every rank and waited for them
    (they stop after their current step and save their state; torchrun kills what is left after 30 s)."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the ranks of one run (world size 1: a plain process)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        if not self.active:
            return "1 process"
        return f"{self.world_size} ranks ({self.backend})"


def launched() -> DistContext:
    """The rank and world size torchrun (or SLURM through torchrun) put in this process's environment."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError as e:
        raise DistributedError(f"RANK/LOCAL_RANK/WORLD_SIZE must be integers ({e}); start the ranks with "
                               "torchrun") from None
    if world < 1 or not 0 <= rank < world:
        raise DistributedError(f"RANK {rank} is not within WORLD_SIZE {world}; start the ranks with torchrun")
    return DistContext(rank, local, world, local_world)


def name_connections(ctx: DistContext) -> None:
    """Name this rank's PostgreSQL connections `labeler rank R/N` (libpq's PGAPPNAME, unless already set): a
    team workspace's `pg_stat_activity` shows which rank holds which connection, and which one wrote what."""
    if ctx.active:
        os.environ.setdefault(APPNAME_ENV, f"labeler rank {ctx.rank}/{ctx.world_size}")


def device_for(ctx: DistContext, preference: str | None) -> torch.device:
    """cuda:LOCAL_RANK when a GPU is used (each rank its own), else the CPU."""
    kind = preference or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DistributedError("--device cuda: no GPU is visible to this process")
        if ctx.active:
            if ctx.local_rank >= torch.cuda.device_count():
                raise DistributedError(f"rank {ctx.rank} is local rank {ctx.local_rank} but this machine has "
                                       f"{torch.cuda.device_count()} GPU(s); give --nproc-per-node at most that")
            return torch.device("cuda", ctx.local_rank)
        return torch.device(kind)
    return torch.device(kind)


def pin_gpu() -> None:
    """Give each rank of a machine its own GPU through CUDA_VISIBLE_DEVICES, before CUDA starts: code that says
    "cuda" in any thread (the prediction worker's) then lands on this rank's GPU."""
    ctx = launched()
    if not ctx.active or ctx.local_world_size < 2:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(ctx.local_world_size)]
    if ctx.local_rank < len(ids):
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[ctx.local_rank]


def setup(preference: str | None = None, backend: str | None = None) -> tuple[DistContext, torch.device]:
    """Join the run's process group when launched by torchrun (once per process) and pick the device.

    NCCL on GPUs, gloo on CPU (or `backend`). The group's timeout (LABELER_DIST_TIMEOUT seconds, default 600) is
    how long a collective waits for a rank that stopped answering without closing its connections."""
    ctx = launched()
    device = device_for(ctx, preference)
    if not ctx.active:
        return ctx, device
    chosen = backend or ("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        try:
            timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
        except ValueError as e:
            raise DistributedError(f"{TIMEOUT_ENV} must be a number of seconds ({e})") from e
        for key in ("MASTER_ADDR", "MASTER_PORT"):
            if key not in os.environ:
                raise DistributedError(f"WORLD_SIZE is {ctx.world_size} but {key} is not set; start the ranks "
                                       "with torchrun (or `labeler train --nproc N` on one machine)")
        dist.init_process_group(chosen, timeout=timeout)
    return DistContext(ctx.rank, ctx.local_rank, ctx.world_size, ctx.local_world_size, dist.get_backend()), device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --- agreement between ranks ------------------------------------------------------------------------------
def _reduce(ctx: DistContext, values: Sequence[float], op=None) -> list[float]:
    t = torch.tensor(list(values), dtype=torch.float64)
    if ctx.backend == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu()]


def agree_stop(ctx: DistContext, reasons: Sequence[bool]) -> list[bool]:
    """Each reason true on every rank when it is true on any rank: they all leave the loop after the same step
    (a time budget met on one rank first, a signal sent to one rank)."""
    if not ctx.active:
        return [bool(r) for r in reasons]
    return [v > 0 for v in _reduce(ctx, [1.0 if r else 0.0 for r in reasons], dist.ReduceOp.MAX)]


def agree_resume(ctx: DistContext, step: int, where: str) -> None:
    """Every rank must resume from the same step: the state folder has to be on storage they all share."""
    if not ctx.active:
        return
    low, high = _reduce(ctx, [float(step)], dist.ReduceOp.MIN)[0], _reduce(ctx, [float(step)], dist.ReduceOp.MAX)[0]
    if low != high:
        raise DistributedError(f"{where}: the ranks found different saved states (step {int(low)} on one, "
                               f"{int(high)} on another): --out must be on storage every machine shares")


def agree_on_ids(ctx: DistContext, ids: Sequence[int], what: str) -> list[int]:
    """Rank 0's list of ids, on every rank (the workspace may change between two ranks' reads). A rank that
    does not know one of them (another workspace, or images not yet visible there) is an error."""
    if not ctx.active:
        return list(ids)
    box: list[Any] = [list(ids) if ctx.main else None]
    try:
        dist.broadcast_object_list(box, src=0, device=torch.device("cuda", torch.cuda.current_device())
                                   if ctx.backend == "nccl" else None)
        chosen = [int(i) for i in box[0]]
        unknown = sorted(set(chosen) - set(ids))
        # every rank must decide the same way, else the ones that go on wait for the one that stopped
        missing = _reduce(ctx, [float(len(unknown))], dist.ReduceOp.MAX)[0]
    except RuntimeError as e:
        if isinstance(e, LabelerError):
            raise
        raise DistributedError(f"another rank stopped before training began ({str(e).strip()[:200]}); its own "
                               "message says why") from None
    if missing:
        raise DistributedError(f"rank 0 trains on {what} that another rank cannot read (e.g. image "
                               f"{unknown[0] if unknown else '?'}): every rank must open the same workspace "
                               "and image root (shared storage)")
    return chosen


def agree_on_value(ctx: DistContext, value: str, what: str) -> None:
    """Every rank must hold rank 0's `value` (e.g. a fingerprint of the training data): else all stop, saying so."""
    if not ctx.active:
        return
    box: list[Any] = [value if ctx.main else None]
    dist.broadcast_object_list(box, src=0, device=torch.device("cuda", torch.cuda.current_device())
                               if ctx.backend == "nccl" else None)
    differ = _reduce(ctx, [0.0 if box[0] == value else 1.0], dist.ReduceOp.MAX)[0]
    if differ:
        raise DistributedError(f"the ranks read different {what}: every rank must open the same workspace (a copy "
                               "made while someone labels is stale) and the same image files")


def _collective_device(ctx: DistContext) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if ctx.backend == "nccl" else torch.device("cpu")


def broadcast_json(ctx: DistContext, value: Any = None) -> Any:
    """Rank 0's `value` (anything JSON can hold), on every rank: its UTF-8 text in a byte tensor, so nothing a
    rank receives is unpickled. One process: `value` itself."""
    if not ctx.active:
        return value
    device = _collective_device(ctx)
    data = json.dumps(value).encode("utf-8") if ctx.main else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device) if ctx.main
           else torch.empty(int(size.item()), dtype=torch.uint8, device=device))
    dist.broadcast(buf, src=0)
    return value if ctx.main else json.loads(bytes(buf.cpu().numpy()).decode("utf-8"))


def gather_ints(ctx: DistContext, values: Sequence[int], width: int) -> list[list[int]]:
    """Every rank's `values` (at most `width` integers; padded with -1), on every rank, in rank order."""
    row = [int(v) for v in values][:width]
    row += [-1] * (width - len(row))
    if not ctx.active:
        return [row]
    device = _collective_device(ctx)
    mine = torch.tensor(row, dtype=torch.int64, device=device)
    rows = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(rows, mine)
    return [[int(v) for v in r.cpu()] for r in rows]


def shard(items: Sequence[Any], ctx: DistContext) -> list[Any]:
    """This rank's part of `items`: every N-th one from position `rank`. Disjoint, and together all of them."""
    return list(items[ctx.rank::ctx.world_size])


# --- the data of one phase -------------------------------------------------------------------------------
def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one image's augmentation, the same on whichever rank loads it."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2, np.uint64)[0] >> 1)


class SeededItems(Dataset):
    """A dataset whose item i in epoch e is drawn with torch's generator seeded by (seed, e, i); torchvision's
    transforms use the global generator, which is restored afterwards."""

    def __init__(self, base: Dataset, seed: int):
        self.base, self.seed, self.epoch = base, seed, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, self.epoch, i))
            return self.base[i]


def global_batch(requested: int, available: int, ctx: DistContext) -> int:
    """The global batch: `requested` (a multiple of the world size), or all the images when there are fewer,
    rounded down to a multiple of the world size."""
    if requested < 1:
        raise DistributedError(f"--batch-size must be at least 1 (got {requested})")
    if requested % ctx.world_size:
        raise DistributedError(f"--batch-size {requested} is the global batch and must split evenly over the "
                               f"{ctx.world_size} ranks; give a multiple of {ctx.world_size}")
    size = min(requested, available)
    size -= size % ctx.world_size
    if size < 1:
        raise DistributedError(f"{available} training image(s) cannot fill one batch on each of the "
                               f"{ctx.world_size} ranks")
    return size


class ShardedEpochs:
    """The batches of one training phase, epoch after epoch, each rank its share of every global batch."""

    def __init__(self, dataset: Dataset, batch: int, seed: int, ctx: DistContext,
                 collate_fn: Callable[[list], Any]):
        self.ctx = ctx
        self.local_batch = batch // ctx.world_size
        self.items = SeededItems(dataset, seed)
        self.sampler = DistributedSampler(self.items, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                          seed=seed, drop_last=True)
        self.collate_fn = collate_fn
        self.steps_per_epoch = len(self.sampler) // self.local_batch

    def epoch_indices(self, epoch: int) -> list[int]:
        self.sampler.set_epoch(epoch)
        return list(self.sampler)

    def batches(self, start_step: int = 0) -> Iterator[tuple[torch.Tensor, list[dict[str, Any]]]]:
        """Endless batches from step `start_step` of the phase (a resumed run picks up at the batch it stopped
        before)."""
        epoch, skip = divmod(start_step, self.steps_per_epoch)
        while True:
            self.items.epoch = epoch
            order = self.epoch_indices(epoch)[skip * self.local_batch:]
            yield from DataLoader(self.items, batch_size=self.local_batch, sampler=order, drop_last=True,
                                  collate_fn=self.collate_fn, num_workers=0)
            epoch, skip = epoch + 1, 0


# --- batch norm across ranks ------------------------------------------------------------------------------
def _differentiable_sum(t: torch.Tensor) -> torch.Tensor:
    """all_reduce(SUM) whose backward sums the gradients over the ranks: torch's functional collectives (the
    older torch.distributed.nn.functional.all_reduce is deprecated)."""
    from torch.distributed import _functional_collectives as funcol

    return funcol.wait_tensor(funcol.all_reduce(t, "sum", dist.group.WORLD))


def _synced_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm whose mean and variance cover every rank's batch (two passes, like the
    one-process kernel, so the variance is not a difference of large sums); gradients flow through torch's
    differentiable all_reduce."""
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    c = x.shape[1]
    dims = [0, *range(2, x.dim())]
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    local_n = torch.tensor([xf.numel() / c], dtype=xf.dtype, device=xf.device)
    first = _differentiable_sum(torch.cat([xf.sum(dims), local_n]))
    n = first[c].detach()
    shape = [1, c] + [1] * (x.dim() - 2)
    mean = first[:c] / n
    centred = xf - mean.view(shape)
    var = _differentiable_sum((centred * centred).sum(dims)) / n
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            bn.running_var.mul_(1 - momentum).add_(var.detach() * n / max(float(n) - 1, 1.0), alpha=momentum)
    y = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y.to(x.dtype)


def _syncing() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class CpuSyncBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training statistics cover every rank (torch's SyncBatchNorm is GPU-only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and _syncing():
            return _synced_batch_norm(self, x)
        return super().forward(x)


def _cpu_sync_norm_act():
    from timm.layers import BatchNormAct2d

    class CpuSyncBatchNormAct2d(BatchNormAct2d):
        """timm's BatchNormAct2d (batch norm, then drop and activation) with statistics over every rank."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training and _syncing():
                return self.act(self.drop(_synced_batch_norm(self, x)))
            return super().forward(x)

    return BatchNormAct2d, CpuSyncBatchNormAct2d


def sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch norm over the global batch: torch's SyncBatchNorm on CUDA (timm keeps BatchNormAct2d's activation);
    on CPU the layers keep their parameters and buffers and change class (the state dict is unchanged)."""
    if device.type == "cuda":
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(model)
    norm_act, synced_act = _cpu_sync_norm_act()
    for m in model.modules():
        if type(m) is norm_act:
            m.__class__ = synced_act
        elif type(m) is nn.BatchNorm2d:
            m.__class__ = CpuSyncBatchNorm2d
    return model


# --- the loss under DistributedDataParallel ---------------------------------------------------------------
class _LossModule(nn.Module):
    """The model and its loss as one module, so every approach's forward (heads call parts of the model) runs
    inside DistributedDataParallel's forward."""

    def __init__(self, model: nn.Module, loss_fn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.phase = None

    def forward(self, x: torch.Tensor, batch: list[dict[str, Any]]):
        return self.loss_fn(x, batch, self.phase)


class DistributedLoss:
    """`loss_fn(x, batch, phase)` for `train_step`, with the model wrapped in DistributedDataParallel.

    The loss of each rank is scaled so DDP's gradient average is the one-process gradient; `global_loss` is
    the loss of the whole global batch (all ranks), the figure the run reports and logs."""

    def __init__(self, ctx: DistContext, model: nn.Module, loss_fn, device: torch.device, find_unused: bool):
        from torch.nn.parallel import DistributedDataParallel

        self.ctx = ctx
        loss_fn.sync = ctx
        self.module = _LossModule(model, loss_fn)
        self.ddp = DistributedDataParallel(self.module, device_ids=[device.index] if device.type == "cuda" else None,
                                           find_unused_parameters=find_unused)
        self.global_loss: float | None = None

    def __call__(self, x: torch.Tensor, batch: list[dict[str, Any]], phase) -> tuple[torch.Tensor, dict[str, float]]:
        self.module.phase = phase
        loss, parts = self.ddp(x, batch)
        total = loss.detach().clone().double()
        dist.all_reduce(total)
        self.global_loss = float(total) / self.ctx.world_size
        if not np.isfinite(self.global_loss):  # every rank sees the same figure and stops the same way
            from inference.train import TrainError

            raise TrainError(f"the loss became {self.global_loss} on the global batch; lower --lr")
        return loss, parts


def reduce_counts(ctx: DistContext, values: list[float], device: torch.device | None) -> torch.Tensor:
    """Sum a small vector of counts over every rank (the loss normaliser); no gradient."""
    t = torch.tensor(values, dtype=torch.float32, device=device)
    if ctx.active:
        dist.all_reduce(t)
    return t


# --- stopping -----------------------------------------------------------------------------------------
class StopSignals:
    """While active, SIGINT and SIGTERM only set `requested` (the name of the signal): the training loop agrees
    on it at the next step boundary, so no rank is left waiting in a collective for one that stopped."""

    def __init__(self):
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        def on_signal(signum, frame) -> None:
            if self.requested and signum == signal.SIGINT:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.requested = self.requested or signal.Signals(signum).name

        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[s] = signal.signal(s, on_signal)
            except ValueError:  # not the main thread: leave the signals alone
                pass
        return self

    def release(self) -> None:
        """Give SIGINT and SIGTERM back their previous handlers (idempotent)."""
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        self.release()


def describe_failure(e: BaseException) -> str:
    """The gist of a collective's error: its first sentence, without the C++ source location."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ", 1)[0][:200]


def is_peer_failure(e: BaseException) -> bool:
    """A collective failed because another rank went away (closed connection, timeout, aborted group)."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(w in text for w in (
        "connection closed", "connection reset", "broken pipe", "timed out", "timeout", "gloo", "nccl",
        "socket", "peer"))


# --- one machine: launch torchrun -------------------------------------------------------------------------
def strip_option(argv: Sequence[str], option: str) -> list[str]:
    """`argv` without `option VALUE` / `option=VALUE` (or an argparse abbreviation of the option)."""
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if len(name) > 3 and name.startswith("--") and option.startswith(name):
            skip = "=" not in token
            continue
        out.append(token)
    return out


def launch_local(nproc: int, module_argv: Sequence[str], workspace: str | None = None) -> None:
    """Run `python -m labeler MODULE_ARGV` on `nproc` ranks of this machine through torchrun (standalone
    rendezvous on a free local port). Raises DistributedError naming the first rank that failed.

    `workspace` (a folder or a PostgreSQL URL) is opened once here first: a wrong path or URL, a server out of
    reach or a missing image root is one line from the launcher, not one per rank. The ranks inherit this
    process's environment, so a team workspace's credentials reach them through libpq's own means
    (PGPASSWORD, PGPASSFILE, PGSERVICE), never on their command lines (a URL with a password is refused)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if nproc < 1:
        raise DistributedError(f"--nproc must be at least 1 (got {nproc})")
    if launched().active:
        raise DistributedError("--nproc launches torchrun, and this process already is a rank of a torchrun run; "
                               "give no --nproc under torchrun")
    if workspace is not None:
        from projects.workspace import Workspace

        Workspace.open(workspace).close()
    # each rank gets its share of the cores (torchrun would give every rank one thread)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    args = get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(nproc), "--max-restarts", "0",
                                         "-m", "labeler", *module_argv])
    try:
        run(args)
    except SignalException as e:
        name = signal.Signals(e.sigval).name
        raise LauncherStopped(f"{name}: torchrun passed it on to the {nproc} ranks, which stopped after their "
                              "current step; run the same command to resume") from None
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with status {failure.exitcode}")
        raise DistributedError(f"rank {rank} of {nproc} {how}; the other ranks were stopped") from None

"""Training and pre-labeling on several processes: torchrun, DistributedDataParallel, gloo on CPU.

Tiny on purpose (CI has 2 cores): 128 px, a global batch of 4 (2 per rank), 6 steps. The one-process and
two-rank runs see the same images per step with the same augmentation, so their losses agree to float
tolerance. That tolerance is loose (1e-2 relative) because a few Adam steps at batch 4 amplify rounding: the
same one-process run with 2 torch threads instead of 1 differs from it by up to 5e-3 after 4 steps. The
exactness itself is pinned in float64 (`test_two_ranks_compute_the_one_process_gradient_in_float64`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from test_model_support import tiny_checkpoint as make_tiny_checkpoint

from inference.distributed import (
    DistContext,
    DistributedError,
    ShardedEpochs,
    global_batch,
    launched,
    shard,
    strip_option,
)
from labeler.cli import main
from projects.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
STEPS = 6
TRAIN = ["--image-size", "128", "--batch-size", "4", "--steps", str(STEPS), "--lr", "1e-4", "--no-eval",
         "--threads", "1", "--save-every", "0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def labeler(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labeler", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env or ENV)


def losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    return [r["loss"] for r in rows]


def model_count(ws: Path) -> int:
    with Workspace.open(ws) as w:
        return len(w.models())


@pytest.fixture(scope="module")
def train_ws(demo_ws, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dist") / "ws"
    shutil.copytree(demo_ws, folder)
    return folder


@pytest.fixture(scope="module")
def one_process(train_ws) -> list[float]:
    out = train_ws.parent / "one"
    before = model_count(train_ws)
    r = labeler("train", str(train_ws), "--out", str(out), *TRAIN)
    assert r.returncode == 0, r.stderr
    assert model_count(train_ws) == before + 1
    return losses(out)


@pytest.fixture(scope="module")
def two_ranks(train_ws) -> tuple[list[float], subprocess.CompletedProcess, int]:
    out = train_ws.parent / "two"
    before = model_count(train_ws)
    r = labeler("train", str(train_ws), "--out", str(out), *TRAIN, "--nproc", "2")
    assert r.returncode == 0, r.stderr
    return losses(out), r, model_count(train_ws) - before


# --- without processes -------------------------------------------------------------------------------------
class _Draws(torch.utils.data.Dataset):
    """Item i: (i, a random draw from torch's global generator): what an augmentation would consume."""

    def __len__(self) -> int:
        return 11

    def __getitem__(self, i: int):
        return i, float(torch.rand(()))


def _steps(world: int, start: int, count: int) -> list[list[tuple[int, float]]]:
    """The global batch of each step: the union of every rank's batch."""
    per_rank = []
    for rank in range(world):
        epochs = ShardedEpochs(_Draws(), 4, seed=7, ctx=DistContext(rank=rank, world_size=world), collate_fn=list)
        it = epochs.batches(start)
        per_rank.append([next(it) for _ in range(count)])
    return [sorted(item for rank in per_rank for item in rank[k]) for k in range(count)]


def test_every_world_size_sees_the_same_global_batches_with_the_same_augmentation_draws():
    one, two, four = _steps(1, 0, 7), _steps(2, 0, 7), _steps(4, 0, 7)
    assert one == two == four  # same images per step, and each image's random draw is its own, not the rank's
    assert all(len(batch) == 4 for batch in one)
    assert len({i for i, _ in one[0] + one[1]}) == 8  # an epoch (2 steps of 11 images) repeats no image
    assert one[2] != one[0]  # the next epoch is shuffled anew
    assert _steps(2, 3, 4) == two[3:7]  # a resumed run picks up at the batch it stopped before


def test_shards_are_disjoint_and_cover_every_image():
    ids = list(range(100, 137))
    parts = [shard(ids, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert sorted(i for p in parts for i in p) == ids
    assert all(len(p) in (12, 13) for p in parts)


def test_the_global_batch_must_split_evenly_over_the_ranks():
    ctx = DistContext(rank=0, world_size=4)
    assert global_batch(8, 100, ctx) == 8 and global_batch(8, 6, ctx) == 4
    with pytest.raises(DistributedError, match="multiple of 4"):
        global_batch(6, 100, ctx)
    with pytest.raises(DistributedError, match="cannot fill one batch"):
        global_batch(8, 3, ctx)


def test_nproc_is_taken_out_of_the_relaunched_command_line():
    argv = ["train", "ws", "--nproc", "2", "--out", "o", "--nproc=3", "--npr", "4", "--steps", "5"]
    assert strip_option(argv, "--nproc") == ["train", "ws", "--out", "o", "--steps", "5"]


def test_a_bad_torchrun_environment_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(DistributedError, match="RANK 5 is not within WORLD_SIZE 2"):
        launched()


def test_follow_options_are_checked_before_launching_anything(train_ws, tmp_path, capsys):
    argv = ["train", str(train_ws), "--out", str(tmp_path / "f"), "--follow", "--nproc", "2", "--epochs", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("give no --epochs") == 1 and "rank " not in err  # one line, from the launcher
    argv = ["train", str(train_ws), "--out", str(tmp_path / "f"), "--follow", "--nproc", "2", "--batch-size", "3"]
    assert main(argv) == 2
    assert capsys.readouterr().err.count("must split evenly over the 2 ranks") == 1


# --- exactness, in float64 --------------------------------------------------------------------------------
def _gradient_worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from inference.distributed import DistributedLoss, setup, sync_batch_norm, teardown

    ctx, device = setup("cpu")
    model, loss_fn, phase, items = _gradient_setup(folder)
    model = sync_batch_norm(model, device)
    step_loss = DistributedLoss(ctx, model, loss_fn, device, find_unused=False)
    mine = items[rank::2]
    loss, _ = step_loss(torch.stack([x for x, _ in mine]), [t for _, t in mine], phase)
    loss.backward()
    from inference.distributed import agree_on_value

    try:  # a rank that read other data (a stale copy of the workspace) stops every rank, none waits forever
        agree_on_value(ctx, f"data seen by rank {rank}", "boxes for the same images")
        refused = False
    except DistributedError:
        refused = True
    if rank == 0:
        torch.save({"loss": step_loss.global_loss, "refused": refused,
                    "grads": {n: p.grad for n, p in model.named_parameters() if p.grad is not None}},
                   Path(folder) / "ranks.pt")
    teardown()


def _gradient_setup(folder: str):
    from inference.approaches import LossComputer, approach
    from inference.architectures import build_detector
    from inference.dataset import DetectionDataset, load_training_data

    with Workspace.open(Path(folder) / "ws") as ws:
        data = load_training_data(ws)
    app = approach("tlm")
    groups = app.groups(data)
    phase = app.phases(data, groups, data.split("train"))[0]
    torch.manual_seed(0)
    model = build_detector("single", "tf_efficientdet_lite0", groups, 128, "none").double().train()
    ds = DetectionDataset(data.split("train")[:4], 128, [127.5] * 3, [127.5] * 3, train=False)
    items = [(x.double(), t) for x, t in (ds[i] for i in range(4))]
    return model, LossComputer(app, model, data, groups), phase, items


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_compute_the_one_process_gradient_in_float64(demo_ws, tmp_path):
    """Synchronised batch norm, the global loss normaliser and DDP's average give exactly the one-process
    gradient of the same 4 images (float64, so rounding does not hide a wrong formula)."""
    shutil.copytree(demo_ws, tmp_path / "ws")
    model, loss_fn, phase, items = _gradient_setup(str(tmp_path))
    loss, _ = loss_fn(torch.stack([x for x, _ in items]), [t for _, t in items], phase)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    torch.multiprocessing.start_processes(_gradient_worker, args=(_free_port(), str(tmp_path)), nprocs=2,
                                          start_method="spawn")
    ranks = torch.load(tmp_path / "ranks.pt")
    assert ranks["loss"] == pytest.approx(loss.item(), rel=1e-6)  # the focal loss itself sums in float32
    assert set(ranks["grads"]) == set(grads)
    diff = sum(float((ranks["grads"][n] - g).pow(2).sum()) for n, g in grads.items())
    norm = sum(float(g.pow(2).sum()) for g in grads.values())
    assert (diff / norm) ** 0.5 < 1e-9
    assert ranks["refused"]


# --- torchrun ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_ranks_follow_the_one_process_loss_trajectory_and_register_one_model(train_ws, one_process, two_ranks):
    two, run, registered = two_ranks
    assert len(one_process) == len(two) == STEPS
    np.testing.assert_allclose(two, one_process, rtol=1e-2)
    assert registered == 1
    assert "training on 2 ranks (gloo), cpu: global batch 4, 2 per rank" in run.stdout
    assert "2 ranks)" in run.stdout and run.stdout.count("trained ") == 1  # rank 0 alone reports
    meta = json.loads((train_ws.parent / "two" / "model.json").read_text())
    assert meta["metrics"]["train"]["world_size"] == 2 and meta["metrics"]["train"]["images_seen"] == 4 * STEPS
    assert not (train_ws.parent / "two" / "train_state").exists()


@pytest.mark.slow
def test_two_machines_simulated_on_localhost_train_like_one_machine(train_ws, two_ranks):
    """`--nnodes 2` with the c10d rendezvous: two torchrun agents of one process each make one run of 2 ranks."""
    out = train_ws.parent / "nodes"
    before = model_count(train_ws)
    endpoint = f"127.0.0.1:{_free_port()}"
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
                                "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "t",
                                "-m", "labeler", "train", str(train_ws), "--out", str(out), *TRAIN],
                               cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    outputs = [a.communicate(timeout=600) for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outputs
    assert sum("training on 2 ranks" in o for o, _ in outputs) == 1
    assert model_count(train_ws) == before + 1
    np.testing.assert_allclose(losses(out), two_ranks[0], rtol=1e-6)  # the same run as 2 ranks of one machine


def _pids_of_rank(marker: str, rank: int) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            env = environ.read_bytes().split(b"\0")
        except OSError:
            continue
        if f"LABELER_TEST_RUN={marker}".encode() in env and f"RANK={rank}".encode() in env:
            found.append(int(environ.parent.name))
    return found


def _saved_step(out: Path) -> int:
    try:
        return json.loads((out / "train_state" / "state.json").read_text())["counters"]["steps"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_killed_rank_stops_the_run_cleanly_and_the_same_command_resumes(train_ws, two_ranks):
    out = train_ws.parent / "killed"
    before = model_count(train_ws)
    marker = uuid.uuid4().hex
    cmd = [sys.executable, "-m", "labeler", "train", str(train_ws), "--out", str(out), *TRAIN, "--nproc", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**ENV, "LABELER_TEST_RUN": marker}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while _saved_step(out) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victims = _pids_of_rank(marker, 1)
    assert proc.poll() is None and victims, "the run ended before a rank could be killed"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "labeler: error: rank 1 of 2 was killed by SIGKILL" in stderr
    assert "saved to" in stderr and "run the same command to resume" in stderr and "Traceback" not in stderr
    stopped_at = _saved_step(out)
    assert 2 <= stopped_at < STEPS and model_count(train_ws) == before  # nothing registered

    again = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"resuming from {out / 'train_state'} at step {stopped_at}" in again.stdout
    assert model_count(train_ws) == before + 1
    # it went on at the very batch it stopped before: the same trajectory as the run nobody killed
    np.testing.assert_allclose(losses(out), two_ranks[0], rtol=1e-6)


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    return make_tiny_checkpoint(tmp_path / "model")


def _predictions(ws: Path, project: str) -> dict[int, list[dict]]:
    with Workspace.open(ws) as w:
        model = w.latest_model()
        return {i: [{k: v for k, v in p.items() if k != "id"} for p in w.predictions(i, model["id"]) or []]
                for i in w.image_ids(project)}


@pytest.mark.slow
def test_sharded_predict_writes_what_one_process_writes(demo_ws, tmp_path, tiny_checkpoint):
    for name in ("one", "two"):
        shutil.copytree(demo_ws, tmp_path / name)
    args = ["--project", "B", "--model", str(tiny_checkpoint), "--batch", "1", "--threads", "1"]
    assert main(["predict", str(tmp_path / "one"), *args]) == 0
    r = labeler("predict", str(tmp_path / "two"), *args, "--nproc", "2")
    assert r.returncode == 0, r.stderr
    assert "on 2 ranks" in r.stdout and "registered model" in r.stdout and "; 0 failed" in r.stdout
    one, two = _predictions(tmp_path / "one", "B"), _predictions(tmp_path / "two", "B")
    assert len(one) == 8 and all(one.values())
    assert two == one
    with Workspace.open(tmp_path / "two") as w:
        assert len(w.models()) == 1  # rank 0 registered it; the other rank only looked it up

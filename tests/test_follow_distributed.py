"""The follow trainer on several ranks: `labeler train --follow --nproc 2` (torchrun, DDP, gloo on CPU).

Tiny on purpose (CI has 2 cores): 128 px, a global batch of 4 (2 per rank), a few steps. Each rank writes what it
trained on to a trace file (LABELER_FOLLOW_TRACE): the step, the image ids of its share and the loss of the global
batch; rank 0 adds the step's whole plan. The one-process run draws the same plans (rank 0 draws them whatever
the number of ranks), so its losses are the two-rank losses to float tolerance (1e-2 relative, as for the plain
trainer in tests/test_distributed.py: a few Adam steps amplify rounding).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_model_support import wait_for

from projects import trainer_status
from projects.split import split_of
from projects.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
TINY = ["--follow", "--image-size", "128", "--batch-size", "4", "--threads", "1", "--poll-seconds", "0.5"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks through /proc")]


def _cmd(ws: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "labeler", "train", str(ws), "--out", str(out), *TINY, *extra]


def _trace(prefix: Path, rank: int) -> list[dict]:
    path = Path(f"{prefix}.rank{rank}.jsonl")
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _marked(marker: str, rank: int | None = None) -> list[int]:
    """Processes started with LABELER_TEST_RUN=marker (the launcher and its ranks), or only the given rank."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            env = environ.read_bytes().split(b"\0")
            state = (environ.parent / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if f"LABELER_TEST_RUN={marker}".encode() in env and state != "Z" and (
                rank is None or f"RANK={rank}".encode() in env):
            found.append(int(environ.parent.name))
    return found


def _no_process_left(marker: str) -> bool:
    end = time.monotonic() + 30
    while _marked(marker) and time.monotonic() < end:
        time.sleep(0.2)
    return not _marked(marker)


def _start(cmd: list[str], marker: str, trace: Path) -> subprocess.Popen:
    env = {**ENV, "LABELER_TEST_RUN": marker, "LABELER_FOLLOW_TRACE": str(trace)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _latest_run(ws: Path) -> dict:
    with Workspace.open(ws) as w:
        return trainer_status.latest_run(w)


def _saved_step(out: Path) -> int:
    return json.loads((out / "train_state" / "state.json").read_text())["counters"]["steps"]


def _check_shares(prefix: Path, killed: bool = False) -> list[dict]:
    """Every step: the two ranks' shares are disjoint halves of rank 0's plan, and both report one global loss.
    A rank 1 killed may have died between finishing its last step and writing it down."""
    zero, one = _trace(prefix, 0), _trace(prefix, 1)
    assert zero and [r["step"] for r in one] == [r["step"] for r in zero][:len(one)]
    assert len(one) >= len(zero) - (1 if killed else 0)
    for a, b in zip(zero, one):
        assert len(a["plan"]) == 4 and len(a["ids"]) == len(b["ids"]) == 2
        assert a["ids"] == a["plan"][0::2] and b["ids"] == a["plan"][1::2]  # positions, so disjoint by construction
        assert Counter(a["ids"] + b["ids"]) == Counter(a["plan"])
        assert a["loss"] == b["loss"] and a["world_size"] == b["world_size"] == 2
    return zero


@pytest.fixture
def ws(demo_ws, tmp_path) -> Path:
    folder = tmp_path / "ws"
    shutil.copytree(demo_ws, folder)
    return folder


def _checkpoints(ws: Path) -> list[dict]:
    with Workspace.open(ws) as w:
        return trainer_status.checkpoints(w)


def test_two_ranks_follow_a_growing_stream_register_one_version_and_stop_when_the_window_asks(ws, tmp_path):
    out, trace, marker = tmp_path / "follow", tmp_path / "trace", uuid.uuid4().hex
    # a checkpoint once 2 newly submitted images have been trained on; every checkpoint passes the gate (-1)
    proc = _start(_cmd(ws, out, "--nproc", "2", "--every-images", "2", "--min-delta", "-1", "--steps", "60"),
                  marker, trace)
    try:
        wait_for(lambda: len(_trace(trace, 0)) >= 1, proc, "a first step")
        with Workspace.open(ws) as w:  # the stream grows while the ranks train
            new = [i for p in w.project_names() for i in w.image_ids(p)
                   if w.image(i)["status"] != "submitted" and split_of(w.image(i)["split_bucket"]) == "train"][:2]
            for i in new:
                project = next(p for p in w.project_names() if i in w.image_ids(p))
                w.add_annotation(i, w.labels(project)[0]["id"], (10, 10, 60, 80), author="test")
                w.set_status(i, "submitted")
        wait_for(lambda: _checkpoints(ws), proc, "the checkpoint")
        with Workspace.open(ws) as w:  # Stop trainer in the window: through the status row
            trainer_status.request_stop(w, trainer_status.latest_run(w)["id"])
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert stdout.count("on 2 ranks (gloo), global batch 4") == 1  # rank 0 alone speaks
    assert stdout.count("follow trainer stopped (a stop asked from the window)") == 1
    assert _no_process_left(marker)

    steps = _check_shares(trace)
    trained = {i for r in steps for i in r["plan"]}
    assert set(new) <= trained and len(new) == 2  # the new images were trained on before the checkpoint
    with Workspace.open(ws) as w:
        models = w.models()
        assert len(models) == 1  # rank 0 alone registered, once
        logged = trainer_status.checkpoints(w)
        assert [c["registered_model_id"] for c in logged] == [models[0]["id"]]
        gate = json.loads(models[0]["metrics"])["gate"]
        # the same gate figures with the version and in its log row (the version adds the per-cohort figures)
        assert {k: gate[k] for k in logged[0]["figures"]["gate"]} == logged[0]["figures"]["gate"]
        assert gate["candidate"] == logged[0]["candidate"] and gate["register"]
        run = trainer_status.latest_run(w)
        assert run["config"]["world_size"] == 2 and run["config"]["backend"] == "gloo"
        assert run["state"] == "stopped" and run["steps"] == len(steps) and run["images_seen"] == 4 * len(steps)
        meta = json.loads(w.model_path(models[0]).joinpath("model.json").read_text())
        assert meta["metrics"]["train"]["world_size"] == 2


def test_one_process_trains_on_the_same_batches_then_a_killed_rank_stops_cleanly_and_sigterm_stops_the_resume(
        ws, tmp_path):
    # the reference: one process on a copy of the same workspace, the same global batch and seed
    shutil.copytree(ws, tmp_path / "ws1")
    common = ["--every-steps", "100000", "--lr", "1e-4"]
    single = subprocess.run(_cmd(tmp_path / "ws1", tmp_path / "one", *common, "--steps", "3"), cwd=ROOT,
                            env={**ENV, "LABELER_FOLLOW_TRACE": str(tmp_path / "one")}, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    reference = _trace(tmp_path / "one", 0)
    assert len(reference) == 3

    out, trace, marker = tmp_path / "follow", tmp_path / "trace", uuid.uuid4().hex
    cmd = _cmd(ws, out, *common, "--steps", "40", "--nproc", "2")
    proc = _start(cmd, marker, trace)
    try:
        wait_for(lambda: len(_trace(trace, 0)) >= 2, proc, "two steps")
        victims = _marked(marker, rank=1)
        assert victims
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2
    assert "labeler: error: rank 1 of 2 was killed by SIGKILL" in stderr and "Traceback" not in stderr
    assert _no_process_left(marker)
    steps = _check_shares(trace, killed=True)
    stopped_at = _saved_step(out)  # rank 0 saved the last step every rank finished
    assert stopped_at == len(steps) >= 2
    run = _latest_run(ws)
    assert run["state"] == "stopped" and "another rank stopped" in run["message"] and not run["alive"]
    with Workspace.open(ws) as w:
        assert w.models() == []  # nothing registered
    # the same plans as the one process, and the same losses to float tolerance
    k = min(3, len(steps))
    assert [r["plan"] for r in steps[:k]] == [r["ids"] for r in reference[:k]]
    np.testing.assert_allclose([r["loss"] for r in steps[:k]], [r["loss"] for r in reference[:k]], rtol=1e-2)

    # the same command resumes from the saved state; SIGTERM to the launcher stops every rank cleanly
    marker, trace = uuid.uuid4().hex, tmp_path / "trace-resumed"
    proc = _start(cmd, marker, trace)
    try:
        wait_for(lambda: len(_trace(trace, 0)) >= 1, proc, "a step after the resume")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert f"warm start from its own state in {out / 'train_state'}" in stdout
    assert stdout.count("follow trainer stopped (SIGTERM)") == 1 and "Traceback" not in stderr
    assert _no_process_left(marker)
    resumed = _check_shares(trace)
    assert resumed[0]["step"] == stopped_at + 1  # it went on from the step it stopped at
    assert _saved_step(out) == resumed[-1]["step"]
    run = _latest_run(ws)
    assert run["state"] == "stopped" and run["message"] == "stopped (SIGTERM)" and not run["alive"]
    assert run["config"]["world_size"] == 2

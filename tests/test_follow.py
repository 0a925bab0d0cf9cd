"""The follow trainer (`labeler train --follow`): its stream, warm start, gate, status row and stopping.

Tiny on purpose: 128 px, batch 2-4, a few steps per checkpoint (a training step takes a second or two here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from inference import follow as follow_mod
from inference.checkpoint import load_checkpoint, read_meta
from inference.distributed import DistContext
from inference.evaluate import EvalResult
from inference.follow import FollowConfig, FollowTrainer, cohort_split, workspace_data
from inference.registry import check_registered
from inference.stream import PlanLoader, SubmittedStream
from inference.train import TrainConfig, TrainError
from labeler.cli import main
from projects import trainer_status
from projects.split import split_of
from projects.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(image_size=128, batch_size=4, progress=False)


@pytest.fixture
def demo_copy(demo_ws, tmp_path):
    folder = tmp_path / "ws"
    shutil.copytree(demo_ws, folder)
    return folder


def _unsubmitted(ws: Workspace, split: str) -> tuple[str, int]:
    """An image of some project in `split` that is not submitted yet."""
    for p in ws.project_names():
        for i in ws.image_ids(p):
            row = ws.image(i)
            if row["status"] != "submitted" and split_of(row["split_bucket"]) == split:
                return p, i
    raise AssertionError(f"the demo has no unsubmitted {split} image")


def _submit(ws: Workspace, project: str, image_id: int, box=(10, 10, 60, 80)) -> None:
    label = ws.labels(project)[0]["id"]
    ws.add_annotation(image_id, label, box, author="test")
    ws.set_status(image_id, "submitted")


def _stream(folder: Path, **kw) -> SubmittedStream:
    with Workspace.open(folder) as ws:
        data = workspace_data(ws, None)
    return SubmittedStream(data, **kw)


# --- the stream ------------------------------------------------------------------------------------------------
def test_stream_sees_images_submitted_after_it_started_and_forgets_unsubmitted_ones(demo_copy):
    stream = _stream(demo_copy, recent_share=1.0)
    with Workspace.open(demo_copy) as ws:
        stream.refresh(ws)
        before = stream.stats()
        train_ids = {i for i, (p, _, _) in trainer_status.submitted_revisions(ws, None, "train").items()}
        assert set(stream.samples) == train_ids and before.pool == len(train_ids) > 0
        assert before.arrived == before.unseen == 0  # everything there at the start counts as the old data

        project, new_id = _unsubmitted(ws, "train")
        _submit(ws, project, new_id)
        added, removed = stream.refresh(ws)
        assert added == [new_id] and removed == []
        st = stream.stats()
        assert st.pool == before.pool + 1 and st.arrived == 1 and st.unseen == 1
        rng = np.random.default_rng(0)
        assert stream.pick(rng).image_id == new_id  # a new image is trained on first
        assert stream.stats().unseen == 0

        # an edit to a submitted image is read again, with its new boxes
        label = ws.labels(project)[0]["id"]
        ws.add_annotation(new_id, label, (100, 100, 150, 150), author="test")
        added, _ = stream.refresh(ws)
        assert added == [new_id] and len(stream.samples[new_id].boxes) == 2 and stream.stats().unseen == 1

        # an image sent back to work leaves the pool and is never drawn again
        old_id = sorted(train_ids)[0]
        ws.set_status(old_id, "in_progress")
        _, removed = stream.refresh(ws)
        assert removed == [old_id] and old_id not in stream.samples
        assert all(stream.pick(rng).image_id != old_id for _ in range(200))
        # test-split images never enter the training stream
        project, test_id = _unsubmitted(ws, "test")
        _submit(ws, project, test_id)
        assert stream.refresh(ws) == ([], []) and test_id not in stream.samples


def test_stream_replays_older_images_beside_the_new_ones(demo_copy):
    stream = _stream(demo_copy, recent_share=0.5, recent_window=1)
    with Workspace.open(demo_copy) as ws:
        stream.refresh(ws)
        old = set(stream.samples)
        project, new_id = _unsubmitted(ws, "train")
        _submit(ws, project, new_id)
        stream.refresh(ws)
    rng = np.random.default_rng(1)
    drawn = [stream.pick(rng).image_id for _ in range(400)]
    share_new = drawn.count(new_id) / len(drawn)
    assert 0.4 < share_new < 0.7  # about half new (the newest image), the rest replay
    assert len(set(drawn) & old) >= len(old) - 1  # the older images keep being seen


def test_images_submitted_before_the_warm_start_cut_count_as_trained_on(demo_copy):
    with Workspace.open(demo_copy) as ws:
        revs = trainer_status.submitted_revisions(ws, None, "train")
    times = sorted(r[2] for r in revs.values())
    cut = times[len(times) // 2]
    stream = _stream(demo_copy, seen_before=cut)
    with Workspace.open(demo_copy) as ws:
        stream.refresh(ws)
    assert stream.stats().unseen == sum(t > cut for t in times) > 0


def test_the_loader_reads_planned_batches_in_the_background_and_the_plans_see_new_images(demo_copy):
    stream = _stream(demo_copy, recent_share=1.0, poll_s=3600)
    loader = PlanLoader(128, [127.5] * 3, [127.5] * 3, seed=0, ctx=DistContext()).start()
    rng = np.random.default_rng(0)
    try:
        with Workspace.open(demo_copy) as ws:
            assert stream.maybe_refresh(ws) and not stream.maybe_refresh(ws)  # then only every poll_s
            loader.submit(stream.plan(rng, 1, 2))
            batch = loader.next()
            assert batch.step == 1 and batch.x.shape == (2, 3, 128, 128) and len(batch.targets) == 2
            project, new_id = _unsubmitted(ws, "train")
            _submit(ws, project, new_id)
            stream.poke()  # read the workspace now instead of after poll_s
            assert stream.maybe_refresh(ws)
        plans = [stream.plan(rng, step, 2) for step in (2, 3, 4)]
        assert new_id in {d["id"] for plan in plans for d in plan["items"]}
        assert new_id in plans[0]["fresh"]  # a new image is trained on first
        for plan in plans:
            loader.submit(plan)
        assert [loader.next().step for _ in plans] == [2, 3, 4]  # in plan order
    finally:
        loader.close()
    assert not loader._thread.is_alive()


def test_a_plan_is_the_same_batch_with_the_same_augmentation_whatever_the_number_of_ranks(demo_copy):
    stream = _stream(demo_copy)
    with Workspace.open(demo_copy) as ws:
        stream.refresh(ws)
    plan = stream.plan(np.random.default_rng(3), 7, 4, spares=2)
    loaders = [PlanLoader(128, [127.5] * 3, [127.5] * 3, seed=5, ctx=DistContext(rank=r, world_size=n)).start()
               for n in (1, 2) for r in range(n)]
    try:
        for loader in loaders:
            loader.submit(json.loads(json.dumps(plan)))  # what the other ranks receive
        one, *two = [loader.next() for loader in loaders]
    finally:
        for loader in loaders:
            loader.close()
    ids = [d["id"] for d in plan["items"]]
    assert [t["image_id"] for t in one.targets] == ids
    assert [[t["image_id"] for t in b.targets] for b in two] == [ids[0::2], ids[1::2]]  # disjoint shares
    together = torch.cat([two[0].x[:1], two[1].x[:1], two[0].x[1:], two[1].x[1:]])
    assert torch.equal(together, one.x)  # each image augmented the same way on whichever rank loads it


def test_cohorts_split_the_evaluation_set_oldest_first():
    assert cohort_split(list(range(7)), 3) == {"c1": [0, 1], "c2": [2, 3, 4], "c3": [5, 6]}
    assert cohort_split([4, 5], 3) == {"c1": [4], "c2": [5]}


# --- the gate --------------------------------------------------------------------------------------------------
def _fake_scores(monkeypatch, values: list[float]):
    """score_detections returning these mAP50 figures in call order (candidate, then the current model)."""
    calls = []

    def fake(ws, detections, node_names, projects=None, score_threshold=0.3, subsets=None):
        v = values[len(calls)]
        calls.append(v)
        r = EvalResult(map50=v, map=v / 2, recall=v, score_threshold=score_threshold, per_category={},
                       images=len(detections), gt_boxes=10)
        return r, {name: {"mAP50": v, "mAP": v / 2, "recall": v, "images": len(ids), "gt_boxes": 3}
                   for name, ids in (subsets or {}).items()}

    monkeypatch.setattr(follow_mod, "score_detections", fake)
    return calls


def test_a_checkpoint_is_registered_only_when_it_beats_the_current_model(demo_copy, tmp_path, monkeypatch):
    calls = _fake_scores(monkeypatch, [0.30, 0.25, 0.30, 0.40, 0.30])
    out = tmp_path / "follow"
    with Workspace.open(demo_copy) as ws:
        result = FollowTrainer(ws, out, TrainConfig(**TINY), FollowConfig(every_steps=1, max_checkpoints=3)).run()
        assert len(calls) == 5
        decisions = [(c.gate.candidate, c.gate.incumbent, c.model_id is not None) for c in result.checkpoints]
        assert decisions == [(0.30, None, True), (0.25, 0.30, False), (0.40, 0.30, True)]
        models = ws.models()
        assert [m["id"] for m in models] == [c.model_id for c in result.registered]
        # both figures of the gate are stored with the version, in its models row and in its model.json
        gate = json.loads(models[-1]["metrics"])["gate"]
        assert gate["candidate"] == 0.40 and gate["incumbent"] == 0.30 and gate["delta"] == pytest.approx(0.10)
        assert gate["incumbent_version"] == models[0]["version"] and gate["eval_images"] > 0
        assert read_meta(ws.model_path(models[-1]))["metrics"]["gate"]["candidate"] == 0.40
        for m in models:  # each version has its own folder, verified and loadable
            check_registered(ws, m, load_checkpoint(ws.model_path(m), ws.super_taxonomy()))
            assert ws.model_path(m).parent == out / "versions"
        # every checkpoint is logged, registered or not, with its decision and both figures
        logged = trainer_status.checkpoints(ws, result.run_id)
        assert [(r["candidate"], r["incumbent"], r["registered_model_id"]) for r in logged] == [
            (0.30, None, models[0]["id"]), (0.25, 0.30, None), (0.40, 0.30, models[1]["id"])]
        assert "does not beat" in logged[1]["decision"]
        assert set(logged[2]["figures"]["candidate"]["cohorts"]) <= {"c1", "c2", "c3"}
        run = trainer_status.get_run(ws, result.run_id)
        assert run["state"] == "stopped" and run["steps"] == 3 and run["checkpoints"] == 3 and not run["alive"]
    # the latest checkpoint is in DIR as `labeler train` writes one, and the state for a resume beside it
    assert (out / "model.safetensors").is_file() and read_meta(out)["version"] == result.checkpoints[-1].version
    assert (out / "train_state" / "state.json").is_file()


def test_no_model_is_registered_without_an_evaluation_set(demo_copy, tmp_path, monkeypatch):
    calls = _fake_scores(monkeypatch, [])
    with Workspace.open(demo_copy) as ws:
        for p in ws.project_names():  # no submitted test image: nothing to judge a model on
            for i in ws.image_ids(p, status="submitted"):
                if split_of(ws.image(i)["split_bucket"]) == "test":
                    ws.set_status(i, "in_progress")
        result = FollowTrainer(ws, tmp_path / "f", TrainConfig(**TINY), FollowConfig(every_steps=1,
                                                                                    max_checkpoints=1)).run()
        assert not calls and ws.models() == [] and result.registered == []
        assert "no submitted image in the test split" in trainer_status.checkpoints(ws)[0]["decision"]


def test_warm_start_from_the_latest_registered_model_of_the_same_config(demo_copy, tmp_path, monkeypatch):
    _fake_scores(monkeypatch, [0.5] * 4)
    with Workspace.open(demo_copy) as ws:
        first = FollowTrainer(ws, tmp_path / "a", TrainConfig(**TINY), FollowConfig(every_steps=1, max_checkpoints=1))
        first.run()
        registered = ws.latest_model()
        again = FollowTrainer(ws, tmp_path / "b", TrainConfig(**TINY), FollowConfig(every_steps=1))
        again.open()
        try:
            assert again.source == f"model {registered['version']}"
            weights = load_checkpoint(ws.model_path(registered)).model.state_dict()
            mine = again.model.state_dict()
            assert all(torch.equal(weights[k].float(), mine[k].float()) for k in weights)
            assert again.stream.seen_before  # images known to that model are replayed, not "new"
        finally:
            again.close()
        other = FollowTrainer(ws, tmp_path / "c", TrainConfig(**{**TINY, "image_size": 192}), FollowConfig())
        other.open()
        other.close()
        assert other.source == "the pretrained backbone"  # another input size: another config


def test_a_stop_request_from_the_window_ends_the_run_cleanly(demo_copy, tmp_path):
    with Workspace.open(demo_copy) as ws:
        trainer = FollowTrainer(ws, tmp_path / "f", TrainConfig(**TINY), FollowConfig(every_steps=10_000,
                                                                                     heartbeat_s=0.0))
        done = threading.Event()

        def ask_stop_after_two_steps() -> None:
            with Workspace.open(demo_copy) as other:  # as the window would, from another connection
                while not done.is_set():
                    run = trainer_status.latest_run(other)
                    if run and run["steps"] >= 2:
                        trainer_status.request_stop(other, run["id"])
                        return
                    time.sleep(0.1)

        t = threading.Thread(target=ask_stop_after_two_steps)
        t.start()
        try:
            result = trainer.run()
        finally:
            done.set()
            t.join()
        run = trainer_status.get_run(ws, result.run_id)
        assert run["state"] == "stopped" and "window" in run["message"] and result.steps >= 2
        assert (tmp_path / "f" / "train_state" / "state.json").is_file()


def test_follow_options_are_checked(demo_copy, tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["train", str(demo_copy), "--out", out, "--follow", "--epochs", "1"]) == 2
    assert "give no --epochs" in capsys.readouterr().err
    assert main(["train", str(demo_copy), "--out", out, "--every-steps", "3", "--epochs", "1"]) == 2
    assert "need --follow" in capsys.readouterr().err
    assert main(["train", str(demo_copy), "--out", out, "--follow", "--every-steps", "3", "--every-images", "4"]) == 2
    assert "at most one checkpoint cadence" in capsys.readouterr().err
    assert main(["train", str(demo_copy), "--out", out, "--follow", "--approach", "per-class"]) == 2
    assert "one after another" in capsys.readouterr().err
    with pytest.raises(TrainError, match="gate metric"):
        FollowConfig(metric="F1").check()


# --- stopping and killing the process --------------------------------------------------------------------------
def _follow_cmd(ws: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "labeler", "train", str(ws), "--out", str(out), "--follow", "--image-size", "128",
            "--batch-size", "2", "--threads", "1", "--poll-seconds", "1", *extra]


def _wait_for(predicate, timeout: float = 180.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _latest_run(folder: Path) -> dict | None:
    with Workspace.open(folder) as ws:
        return trainer_status.latest_run(ws)


def test_sigterm_stops_the_follow_trainer_cleanly(demo_copy, tmp_path):
    out = tmp_path / "follow"
    log = tmp_path / "follow.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(_follow_cmd(demo_copy, out, "--every-steps", "100000"), cwd=ROOT, text=True,
                                stdout=f, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: (_latest_run(demo_copy) or {}).get("steps", 0) >= 2, what="two training steps")
        assert _latest_run(demo_copy)["alive"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert proc.returncode == 0, output
    assert "SIGTERM: stopping" in output and "follow trainer stopped (SIGTERM)" in output
    run = _latest_run(demo_copy)
    assert run["state"] == "stopped" and run["message"] == "stopped (SIGTERM)" and not run["alive"]
    assert (out / "train_state" / "state.json").is_file()  # the same command resumes from here


KILLER = textwrap.dedent("""
    import os, signal, sys
    from inference import checkpoint, follow
    from projects import trainer_status
    where = sys.argv[1]
    def die():
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "registering":  # the models row is written, its transaction not yet committed
        real = trainer_status.add_checkpoint
        def add_checkpoint(ws, run_id, **fields):
            if fields.get("registered_model_id") is not None:
                die()
            return real(ws, run_id, **fields)
        follow.trainer_status.add_checkpoint = add_checkpoint
    elif where == "writing-weights":  # the second checkpoint dies half-way through writing its weights
        real_save = checkpoint.save_file
        n = [0]
        def save_file(state, path, metadata=None):
            n[0] += 1
            if n[0] == 2:
                with open(path, "wb") as f:
                    f.write(b"half a file")
                die()
            return real_save(state, path, metadata=metadata)
        checkpoint.save_file = save_file
    from labeler.cli import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.parametrize("where", ["registering", "writing-weights"])
def test_sigkill_never_leaves_a_half_registered_version(demo_copy, tmp_path, where):
    out = tmp_path / "follow"
    # --min-delta -1: every checkpoint passes the gate, so the kill meets a registration
    args = _follow_cmd(demo_copy, out, "--every-steps", "1", "--min-delta", "-1")[3:]
    cmd = [sys.executable, "-c", KILLER, where, *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    with Workspace.open(demo_copy) as ws:
        assert ws.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        models = ws.models()
        for m in models:  # every registered version is complete: it loads and is what was registered
            check_registered(ws, m, load_checkpoint(ws.model_path(m), ws.super_taxonomy()))
        logged = [c["registered_model_id"] for c in trainer_status.checkpoints(ws) if c["registered_model_id"]]
        assert sorted(logged) == [m["id"] for m in models]  # a model row never without its gate record
        if where == "registering":
            assert models == []  # the kill came inside the transaction: nothing of it was committed
        run = trainer_status.latest_run(ws)
        assert run["state"] in trainer_status.ACTIVE  # it had no chance to say so; its heartbeat goes stale
        # the same command resumes from the last checkpoint's state and works
        resumed = FollowTrainer(ws, out, TrainConfig(image_size=128, batch_size=2, progress=False),
                                FollowConfig(every_steps=1, max_checkpoints=1))
        result = resumed.run()
        assert resumed.source.startswith("its own state") and result.steps >= 2
        for m in ws.models():
            check_registered(ws, m, load_checkpoint(ws.model_path(m), ws.super_taxonomy()))
    assert os.path.isfile(out / "model.safetensors")


def test_every_images_checkpoints_once_the_new_images_have_been_trained_on(demo_copy, tmp_path, monkeypatch):
    _fake_scores(monkeypatch, [0.5, 0.4] * 4)
    with Workspace.open(demo_copy) as ws:
        trainer = FollowTrainer(ws, tmp_path / "f", TrainConfig(**TINY),
                                FollowConfig(every_images=1, poll_s=0.2, recent_share=1.0))
        trainer.open()
        try:
            assert trainer.train_steps(2) == 2 and not trainer.checkpoint_due()  # nothing new yet
            project, new_id = _unsubmitted(ws, "train")
            _submit(ws, project, new_id)
            trainer.stream.poke()
            trainer.train_steps()  # returns when a checkpoint is due: the new image arrived and was trained on
            assert trainer.checkpoint_due() and trainer.stream.trained_on.get(new_id, 0) >= 1
            outcome = trainer.checkpoint()
            assert outcome.pool_images == trainer.stream.stats().pool and not trainer.checkpoint_due()
        finally:
            trainer.close()

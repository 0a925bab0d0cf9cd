"""Training and pre-labeling on several ranks from a PostgreSQL team workspace (torchrun, gloo on CPU).

Every rank opens the URL itself (credentials through libpq's environment, which torchrun passes on) and finds
the images under the image root; only rank 0 writes, except `labeler predict`, where each rank writes the
pre-labels of its own shard. The proof of who wrote what is the server's: each rank's connections carry the
application name `labeler rank R/N`, and a statement trigger on every table of the workspace records the
application name of each INSERT, UPDATE or DELETE.

Tiny on purpose (CI has 2 cores): 128 px, a global batch of 4 (2 per rank), a few steps. Runs against the
throwaway server of tests/pg_server.py (skipped without its binaries unless LABELER_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
from test_model_support import tiny_checkpoint, wait_for

from inference.distributed import DistContext
from inference.follow import workspace_data
from inference.stream import PlanLoader, SubmittedStream
from projects import trainer_status
from projects.workspace import DB_NAME, IMAGE_ROOT_ENV, Workspace
from projects.workspace_copy import copy_workspace

ROOT = Path(__file__).resolve().parent.parent
ENV = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGAPPNAME")}
ENV.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PGPASSFILE=os.devnull)
TRAIN = ["--image-size", "128", "--batch-size", "4", "--steps", "3", "--lr", "1e-4", "--no-eval", "--threads", "1",
         "--save-every", "0"]
FOLLOW = ["--follow", "--image-size", "128", "--batch-size", "4", "--threads", "1", "--poll-seconds", "0.5"]
RANK0, RANK1 = "labeler rank 0/2", "labeler rank 1/2"

pytestmark = pytest.mark.slow


def labeler(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labeler", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env or ENV)


@pytest.fixture
def team(pg_server, demo_ws, tmp_path):
    """`make(n)`: the demo workspace copied into n fresh team workspaces on the server, all with one image root
    (the copied folder, its own labeler.sqlite moved out of it, so nothing can read the folder's database)."""
    root, urls = tmp_path / "shared", []

    def make(n: int = 1) -> tuple[Path, list[str]]:
        shutil.copytree(demo_ws, root)
        for _ in range(n):
            urls.append(pg_server.create_database())
            copy_workspace(root, urls[-1], image_root=root)
        for path in root.glob(DB_NAME + "*"):
            path.rename(tmp_path / path.name)
        return root, list(urls)

    yield make
    for url in urls:
        pg_server.drop_database(url)


def _record_writes(url: str) -> None:
    """A statement trigger on every table: each INSERT, UPDATE or DELETE leaves the writer's application name."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        conn.execute("CREATE TABLE write_log (app TEXT, tbl TEXT)")
        conn.execute("CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "INSERT INTO write_log VALUES (current_setting('application_name'), TG_TABLE_NAME); "
                     "RETURN NULL; END $$")
        for t in tables:
            conn.execute(f'CREATE TRIGGER log_write AFTER INSERT OR UPDATE OR DELETE ON "{t}" '
                         "FOR EACH STATEMENT EXECUTE FUNCTION log_write()")


def _writers(url: str) -> dict[str, set[str]]:
    """Table -> the application names that wrote to it."""
    out: dict[str, set[str]] = {}
    with psycopg.connect(url) as conn:
        for app, table in conn.execute("SELECT app, tbl FROM write_log"):
            out.setdefault(table, set()).add(app)
    return out


def test_two_ranks_train_from_a_team_workspace_with_the_password_from_the_environment_and_rank_0_alone_writes(
        pg_server, team):
    root, (url,) = team(1)
    user = pg_server.add_password_login("team_trainer", "pw-only-in-the-environment")
    login = pg_server.url(url.rsplit("/", 1)[1], user)
    _record_writes(url)
    cmd = ["train", login, "--out", str(root / "models" / "two"), *TRAIN, "--nproc", "2"]

    refused = labeler(*cmd)  # no password anywhere: one line from the launcher, no rank started
    assert refused.returncode == 2 and refused.stderr.count("labeler: error:") == 1, refused.stderr
    assert "cannot connect" in refused.stderr and "exited with" not in refused.stderr

    r = labeler(*cmd, env={**ENV, "PGPASSWORD": "pw-only-in-the-environment"})
    assert r.returncode == 0, r.stderr
    assert "training on 2 ranks (gloo), cpu: global batch 4, 2 per rank" in r.stdout
    assert r.stdout.count("trained ") == 1 and "pw-only-in-the-environment" not in r.stdout + r.stderr
    with Workspace.open(url) as ws:
        (model,) = ws.models()  # exactly one registration
        assert model["path"] == "models/two"  # under the image root: every machine finds it there
        assert json.loads(model["metrics"])["train"]["world_size"] == 2
    writers = _writers(url)
    assert writers["models"] == {RANK0}
    assert set().union(*writers.values()) == {RANK0}  # rank 1 read the workspace and wrote nothing


def _predictions(url: str, project: str) -> dict[int, list[dict]]:
    with Workspace.open(url) as w:
        model = w.latest_model()
        return {i: [{k: v for k, v in p.items() if k != "id"} for p in w.predictions(i, model["id"]) or []]
                for i in w.image_ids(project)}


def test_sharded_predict_on_a_team_workspace_writes_what_one_process_writes(team):
    root, (one, two) = team(2)
    args = ["--project", "B", "--model", str(tiny_checkpoint(root / "model")), "--batch", "1", "--threads", "1"]
    r = labeler("predict", one, *args)
    assert r.returncode == 0, r.stderr
    _record_writes(two)
    r = labeler("predict", two, *args, "--nproc", "2")
    assert r.returncode == 0, r.stderr
    assert "on 2 ranks" in r.stdout and "; 0 failed" in r.stdout and "locked" not in r.stderr
    assert r.stdout.count("registered model") == 1
    expected = _predictions(one, "B")
    assert len(expected) == 8 and all(expected.values())
    assert _predictions(two, "B") == expected
    writers = _writers(two)
    assert writers["models"] == {RANK0}  # rank 0 registered the checkpoint; rank 1 only looked it up
    assert writers["predictions"] == writers["predicted_images"] == {RANK0, RANK1}  # each rank its own shard


def test_the_follow_trainer_on_two_ranks_checkpoints_into_a_team_workspace_and_stops_when_asked(team):
    root, (url,) = team(1)
    _record_writes(url)
    out = root / "models" / "follow"
    cmd = [sys.executable, "-m", "labeler", "train", url, "--out", str(out), *FOLLOW, "--every-steps", "2",
           "--min-delta", "-1", "--steps", "40", "--nproc", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def checkpointed() -> bool:
        with Workspace.open(url) as w:
            return bool(trainer_status.checkpoints(w))

    try:
        wait_for(checkpointed, proc, "a checkpoint")
        with Workspace.open(url) as w:  # Stop trainer in the window: through the status row
            trainer_status.request_stop(w, trainer_status.latest_run(w)["id"])
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert stdout.count("on 2 ranks (gloo), global batch 4") == 1
    assert stdout.count("follow trainer stopped (a stop asked from the window)") == 1
    assert (out / "train_state").is_dir()  # the same command resumes it
    with Workspace.open(url) as w:
        run = trainer_status.latest_run(w)
        assert run["state"] == "stopped" and run["config"]["world_size"] == 2 and not run["alive"]
        logged = trainer_status.checkpoints(w)
        models = w.models()
        assert logged and [c["registered_model_id"] for c in logged] == [m["id"] for m in models]
        assert all(m["path"].startswith("models/follow/versions/") for m in models)
    writers = _writers(url)
    assert RANK0 in writers["trainer_runs"] and RANK0 in writers["training_checkpoints"]
    assert writers["models"] == {RANK0}
    assert RANK1 not in set().union(*writers.values())


def test_a_rank_finds_a_plans_images_under_its_own_mount_of_the_image_root(team, tmp_path, monkeypatch):
    """Rank 0 draws a plan where it mounts the image root; a rank on a machine that mounts it elsewhere
    (LABELER_IMAGE_ROOT) reads the same files there."""
    root, (url,) = team(1)
    with Workspace.open(url) as ws:
        stream = SubmittedStream(workspace_data(ws, None), root=ws.folder)
        stream.refresh(ws)
    plan = json.loads(json.dumps(stream.plan(np.random.default_rng(0), 1, 4)))  # as the other ranks receive it
    assert all(not Path(d["path"]).is_absolute() for d in plan["items"])
    elsewhere = tmp_path / "mounted-elsewhere"
    root.rename(elsewhere)  # rank 0's path no longer exists on "this machine"
    monkeypatch.setenv(IMAGE_ROOT_ENV, str(elsewhere))
    with Workspace.open(url) as ws:
        assert ws.folder == elsewhere
        loader = PlanLoader(128, [127.5] * 3, [127.5] * 3, seed=0, ctx=DistContext(), root=ws.folder).start()
    try:
        loader.submit(plan)
        batch = loader.next()
    finally:
        loader.close()
    assert batch.x.shape == (4, 3, 128, 128) and not loader.take_failures(10)

"""Team mode on both backends (tests/conftest.py `store`): leases of images to annotators, annotation versions
that refuse a stale edit, gold images in the claimed stream, the team's progress, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from projects.errors import LeaseError, StaleEditError, WorkspaceError
from projects.imaging import ImageInfo
from projects.taxonomy import CustomerTaxonomy, Label
from projects.team import ProgressWatcher, submit_claimed
from projects.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent


def _project(ws, n: int, store) -> list[int]:
    """Project P with n images (no files needed: claims never read pixels)."""
    ws.add_project("P", CustomerTaxonomy([Label("Human", "person"), Label("Car", "car")]))
    infos = [ImageInfo(store.image_root / f"{k:03d}.jpg", f"{k:064d}", 100, 80) for k in range(n)]
    return ws.insert_images(ws.project_id("P"), infos).added


@pytest.fixture
def team(store):
    ws = store.create()
    ids = _project(ws, 6, store)
    yield ws, ids, store
    ws.close()


def test_claims_go_unlabeled_first_then_in_progress_and_never_to_two(team):
    ws, ids, store = team
    human = ws.labels("P")[0]["id"]
    for img in ids[:2]:
        ws.add_annotation(img, human, (1, 1, 10, 10), author="earlier")  # in progress, held by nobody
    a = ws.claim("P", "alice", n=3)
    assert [lease.image_id for lease in a] == ids[2:5] and all(lease.holder == "alice" for lease in a)
    with store.open() as other:  # another annotator, another connection
        b = other.claim("P", "bob", n=5)
        assert [lease.image_id for lease in b] == [ids[5], ids[0], ids[1]]
        assert other.claim("P", "carol", n=2) == []  # every image is held
    assert ws.claim("P", "alice") == []  # what alice holds is not claimed twice
    assert {lease.image_id: lease.holder for lease in ws.leases("P")} == \
        {**{i: "alice" for i in ids[2:5]}, **{i: "bob" for i in (ids[5], ids[0], ids[1])}}
    assert [lease.image_id for lease in ws.leases("P", "bob")] == [ids[0], ids[1], ids[5]]  # claimed at once


def test_renew_release_and_one_image_held_by_another(team):
    ws, ids, store = team
    (lease,) = ws.claim("P", "alice", lease_s=60)
    assert ws.renew_leases([lease.image_id], "alice", 120) == [lease.image_id]
    assert ws.renew_leases([lease.image_id], "bob") == []  # not bob's
    with pytest.raises(LeaseError, match=f"image {lease.image_id} .* is held by alice until"):
        ws.claim_image(lease.image_id, "bob")
    assert ws.release_leases([lease.image_id], "alice") == [lease.image_id]
    assert ws.leases("P") == []
    assert ws.claim_image(lease.image_id, "bob").holder == "bob"  # free again at once
    assert ws.renew_leases([lease.image_id], "alice") == []  # bob's now: alice's renewal takes nothing
    with pytest.raises(LeaseError, match="held by bob"):
        ws.check_not_held_by_another(lease.image_id, "alice")
    for bad in ("", " ", "x" * 64, "tab\there"):
        with pytest.raises(LeaseError, match="annotator is named"):
            ws.claim("P", bad)
    with pytest.raises(LeaseError, match="at least one image"):
        ws.claim("P", "alice", n=0)


def test_an_expired_lease_frees_the_image(team):
    ws, ids, store = team
    (lease,) = ws.claim("P", "alice", lease_s=0.3)
    time.sleep(0.45)  # the database's clock passes the expiry (no timing is asserted)
    assert ws.leases("P") == []
    (taken,) = ws.claim("P", "bob")
    assert taken.image_id == lease.image_id  # the first unlabeled image again: alice's lease ran out
    assert ws.renew_leases([lease.image_id], "alice") == []
    # a lease that ran out and that nobody took is renewed by its holder (a laptop that slept)
    (mine,) = ws.claim("P", "carol", lease_s=0.3)
    time.sleep(0.45)
    assert ws.renew_leases([mine.image_id], "carol", 60) == [mine.image_id]
    assert ws.holder(mine.image_id).holder == "carol"


CLAIMER = textwrap.dedent("""
    import json, os, sys, time
    from projects.workspace import Workspace
    ws = Workspace.open(sys.argv[1])
    who, n, go = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    print("ready", flush=True)
    while not os.path.exists(go):  # every claimer starts at once
        time.sleep(0.005)
    got = []
    while True:
        leases = ws.claim("P", who, n=n, lease_s=600)
        if not leases:
            break
        got += [lease.image_id for lease in leases]
        time.sleep(0.003)  # a (very) fast annotator: the claimers overlap whatever the start-up times
    print(json.dumps(got))
""")


def test_concurrent_claimers_never_get_the_same_image(store):
    """Four annotator processes claim until the project runs dry: every image goes to exactly one of them."""
    with store.create() as ws:
        ids = _project(ws, 80, store)
    go = store.tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, store.target, f"a{k}", str(1 + k % 2), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for k in range(4)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()[-2000:]
    go.touch()
    got = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        got.append(json.loads(out))
    every = [i for g in got for i in g]
    assert sorted(every) == sorted(ids)  # each image once: no duplicate, none left out
    assert sum(1 for g in got if g) >= 2  # they really ran side by side
    with store.open() as ws:
        holders = {lease.image_id: lease.holder for lease in ws.leases("P")}
    assert all(holders[i] == f"a{k}" for k, g in enumerate(got) for i in g)


KILLED = textwrap.dedent("""
    import sys, time
    from projects.workspace import Workspace
    ws = Workspace.open(sys.argv[1])
    (lease,) = ws.claim("P", "victim", lease_s=float(sys.argv[2]))
    human = ws.labels("P")[0]["id"]
    aid = ws.add_annotation(lease.image_id, human, (5, 6, 40, 50), author="victim")
    ws.update_annotation(aid, box=(7, 8, 42, 52), user="victim")
    print(lease.image_id, aid, flush=True)
    time.sleep(600)
""")


def test_a_killed_annotator_gives_its_image_back_after_the_lease_and_loses_no_edit(store):
    with store.create() as ws:
        _project(ws, 1, store)
    lease_s = 1.0
    p = subprocess.Popen([sys.executable, "-c", KILLED, store.target, str(lease_s)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        image_id, aid = map(int, p.stdout.readline().split())
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    with store.open() as ws:
        if ws.holder(image_id) is not None:  # still within the lease: nobody else gets it
            assert ws.claim("P", "rescuer") == []
        deadline = time.monotonic() + 30
        while ws.holder(image_id) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        (lease,) = ws.claim("P", "rescuer")
        assert lease.image_id == image_id and ws.image(image_id)["status"] == "in_progress"
        (row,) = ws.annotations(image_id)
        assert (row["id"], row["x1"], row["y2"], row["version"], row["updated_by"]) == (aid, 7.0, 52.0, 2, "victim")


def test_a_stale_edit_is_refused_and_nothing_is_overwritten(team):
    ws, ids, store = team
    human, car = (lab["id"] for lab in ws.labels("P"))
    aid = ws.add_annotation(ids[0], human, (10, 10, 50, 50), author="alice")
    loaded = ws.annotation(aid)["version"]
    assert loaded == 1
    with store.open() as bob:
        assert bob.update_annotation(aid, box=(12, 12, 52, 52), version=loaded, user="bob") == 2
    with pytest.raises(StaleEditError) as info:
        ws.update_annotation(aid, box=(99, 99, 120, 120), label_id=car, version=loaded, user="alice")
    text = str(info.value)
    assert f"annotation {aid} on image {ids[0]} was changed by bob at " in text and "now version 2" in text
    assert "against version 1" in text and "\n" not in text
    row = ws.annotation(aid)
    assert (row["x1"], row["label_id"], row["version"], row["updated_by"]) == (12.0, human, 2, "bob")
    for stale in (lambda: ws.delete_annotation(aid, version=1), lambda: ws.restore_annotation(aid, version=1)):
        with pytest.raises(StaleEditError):
            stale()
    assert ws.annotation(aid)["deleted_at"] is None
    # each write bumps the version: update, delete, restore
    assert ws.delete_annotation(aid, version=2, user="alice") == 3
    with pytest.raises(StaleEditError, match="was deleted by alice"):
        ws.update_annotation(aid, box=(1, 1, 5, 5), version=2)
    assert ws.restore_annotation(aid, version=3) == 4
    assert ws.update_annotation(aid, box=(1, 1, 5, 5)) == 5  # without a version (a script): applied as given
    with pytest.raises(WorkspaceError, match="no annotation with id 9999"):
        ws.update_annotation(9999, box=(1, 1, 5, 5), version=1)


def test_racing_editors_lose_no_edit(store):
    """Two threads, each with its own connection, add 1 to one box's x2 twenty times, re-reading and retrying
    when refused as stale: every increment lands (no lost update), however the writes interleave."""
    with store.create() as ws:
        ids = _project(ws, 1, store)
        aid = ws.add_annotation(ids[0], ws.labels("P")[0]["id"], (0, 0, 10, 10))
    refused = []

    def editor(name: str) -> None:
        with store.open() as w:
            for _ in range(20):
                while True:
                    row = w.annotation(aid)
                    try:
                        w.update_annotation(aid, box=(0, 0, row["x2"] + 1, 10), version=row["version"], user=name)
                        break
                    except StaleEditError:
                        refused.append(name)

    threads = [threading.Thread(target=editor, args=(f"e{k}",)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    with store.open() as ws:
        row = ws.annotation(aid)
    assert (row["x2"], row["version"]) == (50.0, 41)


def test_gold_images_are_served_in_the_stream_and_score_each_annotator(store):
    ws = store.create()
    try:
        ids = _project(ws, 6, store)
        human = ws.labels("P")[0]["id"]
        gold = ids[:2]
        for img in gold:  # the reference: two boxes each, then back in the queue
            ws.add_annotation(img, human, (10, 10, 40, 40), author="lead")
            ws.add_annotation(img, human, (50, 10, 90, 60), author="lead")
            ws.mark_gold(img, requeue=True)
        assert [lease.gold for lease in ws.claim("P", "alice", n=3)] == [False] * 3  # share 0: no gold served
        ws.release_leases(ids, "alice")
        ws.set_gold_share("P", 1.0)
        with pytest.raises(WorkspaceError, match="between 0 and 1"):
            ws.set_gold_share("P", 1.5)
        a = ws.claim("P", "alice", n=3)
        assert [(lease.image_id, lease.gold) for lease in a] == [(gold[0], True), (gold[1], True), (ids[2], False)]
        ws.add_annotation(gold[0], human, (11, 11, 40, 40), author="alice")  # found one of two
        assert submit_claimed(ws, gold[0], "alice").recall == 0.5
        assert ws.image(gold[0])["submitted_by"] == "alice" and ws.holder(gold[0]) is None
        with store.open() as other:
            (b,) = other.claim("P", "bob")  # alice's gold image comes to bob, blind
            assert (b.image_id, b.gold) == (gold[0], True)
            assert other.annotations(gold[0]) == [] and other.image(gold[0])["status"] == "unlabeled"
            other.add_annotation(gold[0], human, (10, 10, 40, 40), author="bob")
            other.add_annotation(gold[0], human, (50, 10, 90, 60), author="bob")
            assert submit_claimed(other, gold[0], "bob").recall == 1.0
        assert ws.claim("P", "alice", n=1)[0].gold is False  # alice was scored on gold[0] and holds gold[1]
        scores = {(q["author"], q["image_id"]): q["recall"] for q in ws.quality_scores("P")}
        assert scores == {("alice", gold[0]): 0.5, ("bob", gold[0]): 1.0}
        ws.set_gold_share("P", 0.5)
        import random

        got = ws.claim("P", "carol", n=2, rng=random.Random(3))  # gold[1] is alice's: only gold[0] is left for carol
        assert len(got) == 2 and [lease.image_id for lease in got if lease.gold] in ([], [gold[0]])
    finally:
        ws.close()


def test_submitting_an_image_another_annotator_holds_is_refused(team):
    ws, ids, store = team
    (lease,) = ws.claim("P", "alice", lease_s=0.3)
    time.sleep(0.45)
    ws.claim_image(lease.image_id, "bob")
    with pytest.raises(LeaseError, match="held by bob"):
        submit_claimed(ws, lease.image_id, "alice")
    assert ws.image(lease.image_id)["status"] == "unlabeled"


def test_team_progress_counts_submitted_today_and_held_now(team):
    ws, ids, store = team
    ws.claim("P", "alice", n=2)
    (b,) = ws.claim("P", "bob")
    submit_claimed(ws, b.image_id, "bob")
    ws.claim("P", "bob")
    assert ws.team_progress("P") == [{"annotator": "alice", "submitted_today": 0, "claimed_now": 2},
                                     {"annotator": "bob", "submitted_today": 1, "claimed_now": 1}]
    assert ws.team_progress("P", since="2999-01-01")[1]["submitted_today"] == 0


def test_the_progress_watcher_hears_another_annotator(store):
    with store.create() as ws:
        _project(ws, 3, store)
    seen: list = []
    changed = threading.Event()

    def on_progress(rows):
        seen.append(rows)
        changed.set()

    watcher = ProgressWatcher(store.target, "P", on_progress, poll_s=0.3).start()
    try:
        assert changed.wait(30)
        assert seen[0] == []
        changed.clear()
        with store.open() as ws:
            ws.claim("P", "bob")
        deadline = time.monotonic() + 30
        while not (seen and seen[-1]) and time.monotonic() < deadline:
            changed.wait(1)
        assert seen[-1] == [{"annotator": "bob", "submitted_today": 0, "claimed_now": 1}]
    finally:
        watcher.stop()


def run(capsys, *argv):
    from labeler.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_claim_and_lease_commands(team, capsys):
    ws, ids, store = team
    target = ws.location
    code, out, _ = run(capsys, "claim", target, "--project", "P", "--user", "alice", "--n", "2", "--json")
    assert code == 0 and [d["image_id"] for d in json.loads(out)] == ids[:2]
    code, out, _ = run(capsys, "claim", target, "--project", "P", "--user", "bob", "--lease-minutes", "5")
    assert code == 0 and f"image {ids[2]:>8}  bob" in out
    code, out, _ = run(capsys, "lease", "list", target, "--project", "P", "--json")
    assert code == 0 and {d["image_id"]: d["holder"] for d in json.loads(out)} == \
        {ids[0]: "alice", ids[1]: "alice", ids[2]: "bob"}
    code, out, err = run(capsys, "lease", "renew", target, "--user", "alice", ids[0], ids[2])
    assert code == 2 and "renewed 1 lease" in out and f"image(s) {ids[2]}: not held by alice" in err
    code, out, _ = run(capsys, "lease", "release", target, "--user", "alice", "--all", "--project", "P")
    assert code == 0 and "released 2 lease(s)" in out
    code, out, _ = run(capsys, "project", "set", target, "P", "--gold-share", "0.1")
    assert code == 0 and "gold share 0.1" in out and ws.gold_share("P") == pytest.approx(0.1)
    code, _, err = run(capsys, "claim", target, "--project", "Nope", "--user", "alice")
    assert code == 2 and "no project named 'Nope'" in err and err.count("\n") == 1
    code, _, err = run(capsys, "claim", target, "--project", "P", "--user", "alice", "--lease-minutes", "0")
    assert code == 2 and "a lease lasts more than 0 s" in err


def test_a_version_6_workspace_gains_leases_and_versions(tmp_path, monkeypatch):
    from projects import schema, workspace

    with monkeypatch.context() as m:
        m.setattr(workspace, "MIGRATIONS", schema.MIGRATIONS[:6])
        m.setattr(workspace, "SCHEMA_VERSION", 6)
        ws = Workspace.create(tmp_path / "w")
        ws.add_project("P", CustomerTaxonomy([Label("Human", "person")]))
        (img,) = ws.insert_images(ws.project_id("P"), [ImageInfo(tmp_path / "a.jpg", "a" * 64, 64, 48)]).added
        aid = ws.add_annotation(img, ws.labels("P")[0]["id"], (1, 2, 30, 40), author="old")
        ws.close()
    with Workspace.open(tmp_path / "w") as ws:
        assert ws.schema_version == schema.SCHEMA_VERSION >= 7 and "leases" in ws.db.table_names()
        assert (ws.annotation(aid)["version"], ws.gold_share("P")) == (1, 0.0)
        assert ws.update_annotation(aid, box=(2, 2, 30, 40), version=1) == 2
        assert ws.claim("P", "alice")[0].image_id == img

"""Team mode under load (issue 13): N simulated annotator processes claim → add and edit boxes → submit for a
fixed time on one workspace, on PostgreSQL and on SQLite; a SIGKILLed annotator; a 10-million-annotation team
workspace. Benchmarks, not tests: they print figures (Markdown) and assert nothing about time.

    .venv/bin/python bench/bench_team.py annotators [--backends postgres sqlite] [--n 1 2 4 8 16 32]
                                                    [--seconds 20] [--think-ms 0] [--out /tmp/bench_team]
    .venv/bin/python bench/bench_team.py kill [--backends postgres sqlite] [--n 4] [--lease-s 6]
    .venv/bin/python bench/bench_team.py scale [--annotations 10000000] [--per-image 10]
    .venv/bin/python bench/bench_team.py copy [--annotations 1000000]

Every annotator is a separate process using the real store API (`Workspace.claim`, `add_annotation`,
`update_annotation(version=...)`, `delete_annotation(version=...)`, submit and `finish_lease`) and writes a log
line after each acknowledged call (fsync'd by nobody: the OS keeps it when the process is killed). From the logs
the driver checks, after the run:

- duplicate claims: two annotators holding one image at the same time (each holding runs from the moment its
  claim returned to the moment its submit began, or its process died; all on this machine's clock) — must be 0;
- lost or overwritten edits: every acknowledged edit's annotation is in the workspace with the highest version
  acknowledged for it and that edit's values (a higher version than any acknowledged one is counted apart: the
  process died between the commit and its log line); two acknowledgements of one (annotation, version) would be
  an overwrite — must be 0.

The PostgreSQL server is a throwaway one started the way tests/pg_server.py starts it, but durable: fsync and
synchronous_commit on (the test server turns both off). SQLite runs as the store configures it (WAL,
synchronous=NORMAL: durable across process crashes, not power loss).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PROJECT = "P"
LABELS = [("Car", "car"), ("Truck", "truck"), ("Person", "person"), ("Bike", "cyclist"), ("Light", "traffic_light")]


# --- the server ------------------------------------------------------------------------------------------------
def start_server(base_options: str = ""):
    """A throwaway PostgreSQL server like the tests' (tests/pg_server.py), with durable settings."""
    from pg_server import PgServer

    class BenchServer(PgServer):
        def start(self) -> BenchServer:
            import atexit

            if self.as_root:
                shutil.chown(self.base, "postgres", "postgres")
            r = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "labeler",
                          "-E", "UTF8", "--no-locale")
            if r.returncode:
                raise RuntimeError(f"initdb failed: {r.stderr.strip()[-2000:]}")
            options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=on "
                       "-c synchronous_commit=on -c shared_buffers=512MB -c max_connections=200 "
                       "-c max_wal_size=8GB -c checkpoint_timeout=30min -c maintenance_work_mem=512MB "
                       f"-c work_mem=16MB {base_options}")
            r = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"), "-o",
                          options, "-w", "-t", "120", "start")
            if r.returncode:
                raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()[-1000:]}")
            self.started = True
            atexit.register(self.stop)
            return self

    return BenchServer().start()


def server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


# --- a workspace to work on ------------------------------------------------------------------------------------
def make_workspace(backend: str, out: Path, images: int, server=None, seed: int = 0) -> str:
    """A workspace with one project of `images` images (no files: claims never read them), half of them with two
    imported boxes that the annotators edit (with their versions). Returns its target (folder or URL)."""
    from projects.taxonomy import CustomerTaxonomy, Label
    from projects.workspace import Workspace

    root = out / "image-root"
    root.mkdir(parents=True, exist_ok=True)
    if backend == "postgres":
        target = server.create_database()
        ws = Workspace.create(target, image_root=root)
    else:
        folder = out / f"ws-{time.monotonic_ns()}"
        ws = Workspace.create(folder)
        target, root = str(folder), folder
    rng = random.Random(seed)
    with ws:
        pid = ws.add_project(PROJECT, CustomerTaxonomy([Label(n, node) for n, node in LABELS]))
        labels = [lab["id"] for lab in ws.labels(PROJECT)]
        rows = [{"path": str(root / f"batch{i // 1000}" / f"img{i:07d}.jpg"), "sha256": f"{i:064x}", "width": 1280,
                 "height": 720, "status": "unlabeled"} for i in range(images)]
        boxed = [i for i in range(images) if i % 2 == 0]
        n = 2 * len(boxed)
        boxes = [_box(rng) for _ in range(n)]
        ws.bulk_import(pid, rows, {
            "image": [i for i in boxed for _ in range(2)], "label_id": [rng.choice(labels) for _ in range(n)],
            "x1": [b[0] for b in boxes], "y1": [b[1] for b in boxes], "x2": [b[2] for b in boxes],
            "y2": [b[3] for b in boxes], "provenance": "imported", "author": "import", "model_id": None,
            "created_at": "2026-01-01T00:00:00.000+00:00", "updated_at": "2026-01-01T00:00:00.000+00:00",
            "deleted_at": None})
    return target


def _box(rng: random.Random) -> tuple[float, float, float, float]:
    x, y = rng.uniform(0, 1100), rng.uniform(0, 600)
    return (round(x, 2), round(y, 2), round(x + rng.uniform(10, 170), 2), round(y + rng.uniform(10, 110), 2))


# --- one annotator -----------------------------------------------------------------------------------------------
def submit(ws, image_id: int, user: str) -> None:
    """Submit a claimed image as an annotator does: submitted by them, its lease given back (one transaction)."""
    from projects.team import submit_claimed

    submit_claimed(ws, image_id, user)


def annotator(args: argparse.Namespace) -> None:
    """Claim → load → add 2 boxes → 3 edits (guarded by version) → sometimes a delete → submit, until the
    deadline; a log line after each acknowledged call."""
    from projects.errors import LabelerError
    from projects.workspace import Workspace

    rng = random.Random(args.seed)
    log = open(args.log, "a", buffering=1)  # line-buffered: written by the OS when the process is killed

    def emit(**fields: Any) -> None:
        log.write(json.dumps(fields) + "\n")

    def think() -> None:
        if args.think_ms:
            time.sleep(rng.expovariate(1000.0 / args.think_ms))

    ws = Workspace.open(args.target)
    if args.what_if_row_locked and ws.db.dialect == "postgresql":  # an experiment, labeled as one in the output:
        ws.db.atomic = ws.db.row_locked  # every write of this process without the global write turn (row locks only)
    labels = [lab["id"] for lab in ws.labels(PROJECT)]
    while time.time() < args.start_at:
        time.sleep(0.01)
    emit(e="start", t=time.time(), pid=os.getpid())
    while time.time() < args.deadline:
        t0 = time.perf_counter()
        try:
            got = ws.claim(PROJECT, args.user, n=1, lease_s=args.lease_s)
        except LabelerError as e:
            emit(e="error", what="claim", msg=str(e)[:300], t=time.time())
            continue
        ms = (time.perf_counter() - t0) * 1000
        if not got:
            emit(e="empty", t=time.time())
            break
        image = got[0].image_id
        emit(e="claim", img=image, t=time.time(), ms=ms, exp=got[0].expires_at)
        think()
        t0 = time.perf_counter()
        boxes = {a["id"]: a["version"] for a in ws.annotations(image)}
        emit(e="load", img=image, ms=(time.perf_counter() - t0) * 1000, t=time.time())
        for _ in range(2):
            think()
            box = _box(rng)
            t0 = time.perf_counter()
            try:
                aid = ws.add_annotation(image, rng.choice(labels), box, author=args.user)
            except LabelerError as e:
                emit(e="error", what="add", msg=str(e)[:300], t=time.time())
                continue
            emit(e="edit", kind="add", img=image, aid=aid, v=1, box=box, deleted=False,
                 ms=(time.perf_counter() - t0) * 1000, t=time.time())
            boxes[aid] = 1
        for _ in range(3):
            think()
            aid = rng.choice(sorted(boxes))
            box = _box(rng)
            t0 = time.perf_counter()
            try:
                v = ws.update_annotation(aid, box=box, version=boxes[aid], user=args.user)
            except LabelerError as e:
                emit(e="error", what="update", msg=str(e)[:300], t=time.time())
                continue
            emit(e="edit", kind="update", img=image, aid=aid, v=v, box=box, deleted=False,
                 ms=(time.perf_counter() - t0) * 1000, t=time.time())
            boxes[aid] = v
        if rng.random() < 0.25:
            think()
            aid = rng.choice(sorted(boxes))
            t0 = time.perf_counter()
            try:
                v = ws.delete_annotation(aid, version=boxes[aid], user=args.user)
                emit(e="edit", kind="delete", img=image, aid=aid, v=v, box=None, deleted=True,
                     ms=(time.perf_counter() - t0) * 1000, t=time.time())
                boxes.pop(aid)
            except LabelerError as e:
                emit(e="error", what="delete", msg=str(e)[:300], t=time.time())
        think()
        emit(e="release", img=image, t=time.time())
        t0 = time.perf_counter()
        try:
            submit(ws, image, args.user)
        except LabelerError as e:
            emit(e="error", what="submit", msg=str(e)[:300], t=time.time())
            continue
        emit(e="submit", img=image, ms=(time.perf_counter() - t0) * 1000, t=time.time())
    emit(e="end", t=time.time())
    ws.close()


def spawn(target: str, user: str, log: Path, start_at: float, deadline: float, args: argparse.Namespace,
          seed: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, __file__, "worker", "--target", target, "--user", user, "--log", str(log),
         "--start-at", str(start_at), "--deadline", str(deadline), "--think-ms", str(args.think_ms),
         "--lease-s", str(args.lease_s), "--seed", str(seed),
         *(["--what-if-row-locked"] if getattr(args, "what_if_row_locked", False) else [])],
        env=env, stdin=subprocess.DEVNULL)


# --- checking the logs -----------------------------------------------------------------------------------------
def read_logs(logs: dict[str, Path]) -> dict[str, list[dict]]:
    out = {}
    for user, path in logs.items():
        lines = path.read_text().splitlines() if path.exists() else []
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by SIGKILL
                pass
        out[user] = events
    return out


def holdings(events: dict[str, list[dict]], died: dict[str, float]) -> list[tuple[int, str, float, float]]:
    """(image, holder, from, to) for every claim in the logs: to the start of its submit, or to the process's
    death, or to its last log line."""
    out = []
    for user, evs in events.items():
        open_: dict[int, float] = {}
        last = max((e["t"] for e in evs if "t" in e), default=0.0)
        for e in evs:
            if e["e"] == "claim":
                open_[e["img"]] = e["t"]
            elif e["e"] == "release" and e["img"] in open_:
                out.append((e["img"], user, open_.pop(e["img"]), e["t"]))
        for img, t in open_.items():
            out.append((img, user, t, died.get(user, last)))
    return out


def duplicates(held: list[tuple[int, str, float, float]]) -> int:
    by_image: dict[int, list[tuple[float, float, str]]] = defaultdict(list)
    for img, user, t0, t1 in held:
        by_image[img].append((t0, t1, user))
    count = 0
    for spans in by_image.values():
        spans.sort()
        for (_a0, a1, ua), (b0, _b1, ub) in zip(spans, spans[1:]):
            if ua != ub and b0 < a1:
                count += 1
    return count


def check_edits(target: str, events: dict[str, list[dict]]) -> dict[str, int]:
    """Every acknowledged edit against the workspace at the end (see the module docstring)."""
    from projects.workspace import Workspace

    acked: dict[int, dict] = {}
    overwritten = 0
    seen: set[tuple[int, int]] = set()
    for evs in events.values():
        for e in evs:
            if e["e"] != "edit":
                continue
            key = (e["aid"], e["v"])
            if key in seen:
                overwritten += 1
            seen.add(key)
            if e["aid"] not in acked or e["v"] > acked[e["aid"]]["v"]:
                acked[e["aid"]] = e
    boxes_of: dict[int, dict] = {}
    for e in (e for evs in events.values() for e in evs if e["e"] == "edit" and e["box"] is not None):
        if e["aid"] not in boxes_of or e["v"] > boxes_of[e["aid"]]["v"]:
            boxes_of[e["aid"]] = e
    lost = unlogged = 0
    with Workspace.open(target) as ws:
        ids = sorted(acked)
        rows = {}
        for k in range(0, len(ids), 1000):
            chunk = ids[k:k + 1000]
            marks = ",".join("?" * len(chunk))
            for r in ws._rows(f"SELECT id, x1, y1, x2, y2, deleted_at, version FROM annotations WHERE id IN ({marks})",
                              chunk):
                rows[r["id"]] = r
    for aid, e in acked.items():
        row = rows.get(aid)
        if row is None or row["version"] < e["v"]:
            lost += 1
            continue
        if row["version"] > e["v"]:
            unlogged += 1  # committed, then the process died before its log line
            continue
        if bool(row["deleted_at"]) != e["deleted"]:
            lost += 1
            continue
        box = (e if not e["deleted"] else boxes_of.get(aid, e))["box"]
        if box is not None and tuple(round(row[c], 2) for c in ("x1", "y1", "x2", "y2")) != tuple(box):
            lost += 1
    return {"acked": len(acked), "lost": lost, "overwritten": overwritten, "unlogged_later_versions": unlogged}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def summarize(events: dict[str, list[dict]], seconds: float) -> dict[str, Any]:
    flat = [e for evs in events.values() for e in evs]
    claims = [e["ms"] for e in flat if e["e"] == "claim"]
    updates = [e["ms"] for e in flat if e["e"] == "edit" and e["kind"] == "update"]
    adds = [e["ms"] for e in flat if e["e"] == "edit" and e["kind"] == "add"]
    submits = [e["ms"] for e in flat if e["e"] == "submit"]
    edits = sum(1 for e in flat if e["e"] == "edit")
    errors: dict[str, int] = defaultdict(int)
    for e in flat:
        if e["e"] == "error":
            kind = ": stale" if "not written" in e["msg"] else ": busy" if "busy" in e["msg"] else ""
            errors[e["what"] + kind] += 1
    return {"images_submitted": len(submits), "images_per_s": len(submits) / seconds, "edits": edits,
            "edits_per_s": edits / seconds, "claim_p50": pct(claims, 0.5), "claim_p95": pct(claims, 0.95),
            "update_p50": pct(updates, 0.5), "update_p95": pct(updates, 0.95), "add_p95": pct(adds, 0.95),
            "submit_p95": pct(submits, 0.95), "errors": dict(errors),
            "empty": sum(1 for e in flat if e["e"] == "empty")}


# --- the runs ----------------------------------------------------------------------------------------------------
def run_annotators(backend: str, n: int, args: argparse.Namespace, server, out: Path,
                   kill_after: float | None = None) -> dict[str, Any]:
    images = int(args.seconds * ((3000 if not args.think_ms else 300) + 30 * n))  # never runs out (SQLite flat out:
    # ~1,300 images/s)
    target = make_workspace(backend, out, images, server)
    try:
        return {"backend": backend, **run_on(target, n, args, out, kill_after), "images": images}
    finally:
        if backend == "postgres":
            server.drop_database(target)
        else:
            shutil.rmtree(target, ignore_errors=True)


def run_on(target: str, n: int, args: argparse.Namespace, out: Path, kill_after: float | None = None
           ) -> dict[str, Any]:
    """N annotators on an existing workspace for args.seconds; figures and checks (see the module docstring)."""
    backend = "postgres" if target.startswith("postgresql://") else "sqlite"
    logs = {f"ann{k:02d}": out / f"{backend}-{n}-{time.monotonic_ns()}-ann{k:02d}.jsonl" for k in range(n)}
    start_at = time.time() + 4 + 0.15 * n  # every process imported and connected before the clock starts
    deadline = start_at + args.seconds
    procs = {user: spawn(target, user, log, start_at, deadline, args, seed=k)
             for k, (user, log) in enumerate(logs.items())}
    died: dict[str, float] = {}
    probe: dict[str, Any] = {}
    if kill_after is not None:
        victim = next(iter(procs))
        time.sleep(max(0.0, start_at + kill_after - time.time()))
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        died[victim] = time.time()
        probe = probe_killed_lease(target, read_logs({victim: logs[victim]})[victim], args.lease_s)
        probe["killed_after_s"] = round(died[victim] - start_at, 1)
    for p in procs.values():
        p.wait(timeout=args.seconds + 120)
    events = read_logs(logs)
    result = {"n": n, "think_ms": args.think_ms, "seconds": args.seconds, "load_1m": os.getloadavg()[0],
              **summarize(events, args.seconds),
              "duplicates": duplicates(holdings(events, died)), **check_edits(target, events), **probe}
    for user in died:  # the killed annotator's own acknowledged edits, all there?
        mine = check_edits(target, {user: events[user]})
        result.update(killed_acked=mine["acked"], killed_lost=mine["lost"])
    for log in logs.values():
        log.unlink(missing_ok=True)
    return result


def probe_killed_lease(target: str, events: list[dict], lease_s: float) -> dict[str, Any]:
    """The killed annotator's image: held (claim_image by another user refused) until its lease runs out, then
    free (claimed). Times on the database's clock."""
    from projects.errors import LeaseError
    from projects.workspace import Workspace

    released = {e["img"] for e in events if e["e"] == "release"}
    held = [e for e in events if e["e"] == "claim" and e["img"] not in released]
    if not held:
        return {"killed_holding": None}
    image, expires = held[-1]["img"], held[-1]["exp"]
    with Workspace.open(target) as ws:
        before = ws.db_clock()
        try:
            ws.claim_image(image, "probe", lease_s=1)
            refused_before_expiry = False
        except LeaseError:
            refused_before_expiry = True
        time.sleep(max(0.0, expires - ws.db_clock()) + 0.2)
        lease = ws.claim_image(image, "probe", lease_s=1)
        after = ws.db_clock()
        ws.release_leases([image], "probe")
    return {"killed_holding": image, "refused_before_expiry": refused_before_expiry,
            "probe_before_s": round(expires - before, 2), "claimed_after_expiry_s": round(after - expires, 2),
            "probe_holder": lease.holder}


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| backend | annotators | images/s | edits/s | claim p50 | claim p95 | edit commit p50 | edit commit p95 "
            "| add p95 | submit p95 | duplicate claims | lost edits | overwritten | errors | load |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['n']} | {r['images_per_s']:.1f} | {r['edits_per_s']:.0f} | "
                     f"{r['claim_p50']:.1f} ms | {r['claim_p95']:.1f} ms | {r['update_p50']:.1f} ms | "
                     f"{r['update_p95']:.1f} ms | {r['add_p95']:.1f} ms | {r['submit_p95']:.1f} ms | "
                     f"{r['duplicates']} | {r['lost']} | {r['overwritten']} | "
                     f"{', '.join(f'{k} {v}' for k, v in r['errors'].items()) or '0'} | "
                     f"{r.get('load_1m', float('nan')):.1f} |")
    return "\n".join(lines)


def keeping_up(rows: list[dict[str, Any]], backend: str) -> str:
    """The first annotator count at which `backend` stops keeping up: per-annotator images/s below 80 % of one
    annotator's alone, or edit commit p95 over 20 ms."""
    mine = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["n"])
    if not mine:
        return "-"
    alone = mine[0]["images_per_s"] / mine[0]["n"]
    for r in mine:
        per = r["images_per_s"] / r["n"]
        if per < 0.8 * alone or r["update_p95"] > 20:
            return (f"{r['n']} annotators ({per:.2f} images/s each vs {alone:.2f} alone, edit commit p95 "
                    f"{r['update_p95']:.1f} ms)")
    return f"keeps up at every N tried (up to {mine[-1]['n']})"


def cmd_annotators(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = start_server() if "postgres" in args.backends else None
    rows = []
    for backend in args.backends:
        for n in args.n:
            r = run_annotators(backend, n, args, server, out)
            if args.what_if_row_locked and backend == "postgres":
                r["backend"] = "postgres, what-if: no global write turn"
            rows.append(r)
            print(json.dumps(r), flush=True)
    if server:
        print(f"\nPostgreSQL {server_version(server.url('postgres'))}, fsync and synchronous_commit on")
    print(f"\n{args.seconds:.0f} s per run, think time {args.think_ms:g} ms (exponential) between actions\n")
    print(table(rows))
    for backend in dict.fromkeys(r["backend"] for r in rows):
        if args.think_ms:
            print(f"\n{backend} stops keeping up at: {keeping_up(rows, backend)}")
        else:
            best = max((r for r in rows if r["backend"] == backend), key=lambda r: r["images_per_s"])
            print(f"\n{backend} flat out: at most {best['images_per_s']:.0f} images/s ({best['n']} annotators)")
    what_if = "-what-if" if args.what_if_row_locked else ""
    (out / f"annotators-think{args.think_ms:g}{what_if}.json").write_text(json.dumps(rows, indent=1))


def cmd_kill(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = start_server() if "postgres" in args.backends else None
    for backend in args.backends:
        r = run_annotators(backend, args.n[0], args, server, out, kill_after=args.kill_after)
        print(json.dumps(r), flush=True)


# --- scale: a team workspace with millions of annotations -----------------------------------------------------------
def bulk_load(url: str, root: Path, annotations: int, per_image: int, seed: int = 0) -> dict[str, Any]:
    """One project of annotations / per_image images (90 % submitted, 2 % in progress, 8 % unlabeled) and their
    boxes (3 % soft-deleted), loaded with COPY in one transaction per table; returns rows and seconds."""
    import psycopg

    from projects.taxonomy import CustomerTaxonomy, Label
    from projects.workspace import Workspace

    with Workspace.create(url, image_root=root) as ws:
        pid = ws.add_project(PROJECT, CustomerTaxonomy([Label(n, node) for n, node in LABELS]))
        labels = [lab["id"] for lab in ws.labels(PROJECT)]
    images = annotations // per_image
    rng = random.Random(seed)
    t = "2026-01-01T00:00:00.000+00:00"
    timings = {}
    with psycopg.connect(url, autocommit=False) as conn:
        started = time.perf_counter()
        rebuild = _unindex(conn, "images")
        with conn.cursor() as cur, cur.copy("COPY images (id, project_id, path, sha256, width, height, added_at, "
                                            "split_bucket, status, status_updated_at) FROM STDIN") as copy:
            for start in range(1, images + 1, 100_000):
                lines = []
                for i in range(start, min(images, start + 99_999) + 1):
                    r = rng.random()
                    status = "submitted" if r < 0.90 else "in_progress" if r < 0.92 else "unlabeled"
                    lines.append(f"{i}\t{pid}\tbatch{i // 10000:04d}/img{i:08d}.jpg\t{i:064x}\t1280\t720\t{t}\t"
                                 f"{i % 100}\t{status}\t{t}\n")
                copy.write("".join(lines))
        _reindex(conn, "images", rebuild)
        conn.commit()
        timings["images_s"] = time.perf_counter() - started
        started = time.perf_counter()
        rebuild = _unindex(conn, "annotations")
        with conn.cursor() as cur, cur.copy("COPY annotations (id, image_id, label_id, x1, y1, x2, y2, provenance, "
                                            "author, created_at, updated_at, deleted_at) FROM STDIN") as copy:
            for start in range(1, annotations + 1, 200_000):
                lines = []
                for a in range(start, min(annotations, start + 199_999) + 1):
                    x, y = rng.random() * 1100, rng.random() * 600
                    deleted = t if rng.random() < 0.03 else "\\N"
                    lines.append(f"{a}\t{(a - 1) // per_image + 1}\t{labels[a % len(labels)]}\t{x:.2f}\t{y:.2f}\t"
                                 f"{x + 80:.2f}\t{y + 50:.2f}\timported\tann{a % 40:02d}\t{t}\t{t}\t{deleted}\n")
                copy.write("".join(lines))
        _reindex(conn, "annotations", rebuild)
        conn.commit()
        timings["annotations_s"] = time.perf_counter() - started
        started = time.perf_counter()
        for table in ("images", "annotations"):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE images")
        conn.execute("VACUUM ANALYZE annotations")
        timings["analyze_s"] = time.perf_counter() - started
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
    return {"images": images, "annotations": annotations, "database_size": size,
            **{k: round(v, 1) for k, v in timings.items()}}


def _unindex(conn, table: str) -> list[str]:
    """Bulk-load mode for one table in this transaction: its foreign-key triggers off (the generated rows are
    consistent by construction) and its secondary indexes dropped; returns the statements that rebuild them."""
    defs = [r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND "
                                       "tablename = %s AND indexname <> %s", [table, f"{table}_pkey"])]
    names = [r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND "
                                        "tablename = %s AND indexname <> %s", [table, f"{table}_pkey"])]
    conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
    for name in names:
        conn.execute(f'DROP INDEX "{name}"')
    return defs


def _reindex(conn, table: str, rebuild: list[str]) -> None:
    for statement in rebuild:
        conn.execute(statement)
    conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER ALL")


def cmd_scale(args: argparse.Namespace) -> None:
    """The window's own open (`labeler.app.window_runner.open_session`, without widgets) on a 10M-annotation team
    workspace, with --user (the images claimed for U) and without (every image of the project); claims; switching
    images as an annotator does (submit and next: a claim) and as a reviewer browsing does (go to any image)."""
    from labeler.app.window_runner import open_session
    from projects.workspace import Workspace

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = start_server()
    url = server.create_database()
    root = out / "scale-root"
    root.mkdir(exist_ok=True)
    load = bulk_load(url, root, args.annotations, args.per_image)
    print(json.dumps(load), flush=True)
    times: dict[str, list[float]] = defaultdict(list)

    def timed(name: str, fn):
        t0 = time.perf_counter()
        value = fn()
        times[name].append((time.perf_counter() - t0) * 1000)
        return value

    for k in range(args.repeat):
        timed("workspace_open", lambda: Workspace.open(url)).close()
        session = timed("open_user", lambda k=k: open_session(url, PROJECT, user=f"opener{k:02d}"))
        assert session.image is not None
        session.images.release()
        session.ws.close()
        session = timed("open_all", lambda: open_session(url, PROJECT))
        session.ws.close()
    ws = Workspace.open(url)
    for _ in range(args.claims):  # claim → submit, as one annotator goes through the queue
        (lease,) = timed("claim", lambda: ws.claim(PROJECT, "ann", n=1))
        submit(ws, lease.image_id, "ann")
    ws.close()
    session = open_session(url, PROJECT, user="switcher")
    for _ in range(args.claims):  # the annotator's next image: submit, claim the next, show it
        timed("switch_user", session.submit_and_next)
    session.images.release()
    session.ws.close()
    session = open_session(url, PROJECT)
    rng = random.Random(1)
    for _ in range(args.claims):  # browsing: any image, its boxes, the neighbours to prefetch
        index = rng.randrange(len(session.queue))
        timed("switch_browse", lambda: (session.go_to(index), session.neighbours()))  # noqa: B023
    session.ws.close()
    result = {**load, **{f"{name}_{q}": pct(v, {"p50": 0.5, "p95": 0.95}[q]) for name, v in times.items()
                         for q in ("p50", "p95")}}
    print(json.dumps(result), flush=True)
    if args.annotators:
        for n in args.annotators:
            r = {"backend": "postgres 10M", **run_on(url, n, args, out)}
            print(json.dumps(r), flush=True)
            print(table([r]))
    print(f"\nPostgreSQL {server_version(url)}, fsync and synchronous_commit on; {load['annotations']:,} annotations "
          f"on {load['images']:,} images loaded in {load['images_s']} + {load['annotations_s']} + {load['analyze_s']} "
          f"s (images, annotations, vacuum analyze), {load['database_size']}\n")
    print("| measure | p50 | p95 |\n|---|---:|---:|")
    for name, label in (("workspace_open", "Workspace.open (connect, identify, schema check)"),
                        ("open_user", "window open with --user: to the first claimed image on screen"),
                        ("open_all", "window open without --user: every image id of the project listed"),
                        ("claim", "claim (one image)"),
                        ("switch_user", "next image with --user: submit, claim, show"),
                        ("switch_browse", "go to any image: row, boxes, neighbours")):
        print(f"| {label} | {result[name + '_p50']:.1f} ms | {result[name + '_p95']:.1f} ms |")
    server.drop_database(url)

def cmd_copy(args: argparse.Namespace) -> None:
    """`labeler workspace copy` on a folder workspace of args.annotations boxes: to PostgreSQL and back (rows only:
    the bench's images have no files, so --no-image-check; hashing is disk-bound and measured by nothing here)."""
    from projects.workspace import Workspace
    from projects.workspace_copy import copy_workspace

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = start_server()
    images = args.annotations // 10
    folder = make_workspace("sqlite", out, images, seed=0)
    with Workspace.open(folder) as ws:  # 10 boxes per image in all (make_workspace put 2 on every other one)
        ids = ws.image_ids(PROJECT)
        n = args.annotations - 2 * ((images + 1) // 2)
        rng = random.Random(2)
        boxes = [_box(rng) for _ in range(n)]
        with ws.transaction():
            ws.db.executemany(
                "INSERT INTO annotations (image_id, label_id, x1, y1, x2, y2, provenance, author, created_at, "
                "updated_at) VALUES (?, 1, ?, ?, ?, ?, 'imported', 'import', '2026-01-01', '2026-01-01')",
                [(ids[k % len(ids)], *b) for k, b in enumerate(boxes)])
    size = Path(folder, "labeler.sqlite").stat().st_size
    url = server.create_database()
    there = copy_workspace(folder, url, image_root=folder, check_images=False)
    back = copy_workspace(url, out / f"back-{time.monotonic_ns()}", check_images=False)
    rows = sum(there.tables.values())
    print(f"\nworkspace of {there.tables['annotations']:,} annotations on {there.tables['images']:,} images "
          f"({rows:,} rows in {len(there.tables)} tables, SQLite file {size / 1e6:.0f} MB)\n")
    print("| copy | seconds | rows/s |\n|---|---:|---:|")
    print(f"| folder → PostgreSQL | {there.seconds:.1f} | {rows / there.seconds:,.0f} |")
    print(f"| PostgreSQL → folder | {back.seconds:.1f} | {rows / back.seconds:,.0f} |")
    server.drop_database(url)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(back.destination, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("annotators", "kill"):
        s = sub.add_parser(name)
        s.add_argument("--backends", nargs="+", default=["postgres", "sqlite"], choices=["postgres", "sqlite"])
        s.add_argument("--n", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32] if name == "annotators" else [4])
        s.add_argument("--seconds", type=float, default=20.0)
        s.add_argument("--think-ms", type=float, default=0.0)
        s.add_argument("--lease-s", type=float, default=600.0 if name == "annotators" else 6.0)
        s.add_argument("--kill-after", type=float, default=5.0)
        s.add_argument("--out", default="/tmp/bench_team")
        s.add_argument("--what-if-row-locked", action="store_true",
                       help="an experiment: PostgreSQL writes without the global write turn (row locks only)")
    s = sub.add_parser("scale")
    s.add_argument("--annotations", type=int, default=10_000_000)
    s.add_argument("--per-image", type=int, default=10)
    s.add_argument("--repeat", type=int, default=20, help="opens measured")
    s.add_argument("--claims", type=int, default=200, help="claims and image switches measured")
    s.add_argument("--annotators", nargs="*", type=int, default=[16], help="then N annotators on it (none: skip)")
    s.add_argument("--seconds", type=float, default=20.0)
    s.add_argument("--think-ms", type=float, default=0.0)
    s.add_argument("--lease-s", type=float, default=600.0)
    s.add_argument("--out", default="/tmp/bench_team")
    s = sub.add_parser("copy")
    s.add_argument("--annotations", type=int, default=1_000_000)
    s.add_argument("--out", default="/tmp/bench_team")
    w = sub.add_parser("worker")
    w.add_argument("--target", required=True)
    w.add_argument("--user", required=True)
    w.add_argument("--log", required=True)
    w.add_argument("--start-at", type=float, required=True)
    w.add_argument("--deadline", type=float, required=True)
    w.add_argument("--think-ms", type=float, default=0.0)
    w.add_argument("--lease-s", type=float, default=600.0)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--what-if-row-locked", action="store_true")
    args = p.parse_args()
    {"annotators": cmd_annotators, "kill": cmd_kill, "scale": cmd_scale, "copy": cmd_copy,
     "worker": annotator}[args.cmd](args)


if __name__ == "__main__":
    main()

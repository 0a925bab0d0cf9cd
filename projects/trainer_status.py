"""The follow trainer's rows in the workspace: its status (a heartbeat) and its checkpoint log.

`labeler train --follow` runs as its own process, on this machine or another one that sees the workspace
file. It writes one `trainer_runs` row and keeps it current every few seconds; the window reads it for its
status bar and asks the run to stop by setting `stop_requested_at` (the trainer polls it, so a trainer
started elsewhere can be stopped from the window too). Every checkpoint the trainer evaluates is one
`training_checkpoints` row with the gate's two figures, whether it was registered or not.

Every write is one short transaction (the window writes the same file), and the reads the window makes
are indexed look-ups, so polling them stays far below a frame. Qt-free, torch-free.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from projects.errors import WorkspaceError
from projects.schema import TRAINER_STATES
from projects.split import split_of
from projects.workspace import Workspace, now

ACTIVE = ("starting", "training", "evaluating", "waiting", "stopping")
STALE_S = 60.0  # an active run whose heartbeat is older than this is taken for dead (killed, machine gone)
RUN_FIELDS = ("state", "config", "ended_at", "steps", "images_seen", "pool_images", "new_images", "loss",
              "images_per_s", "checkpoints", "registered", "model_id", "message", "pid", "host")
CHECKPOINT_FIELDS = ("version", "steps", "images_seen", "pool_images", "loss", "seconds", "eval_images", "metric",
                     "candidate", "incumbent", "incumbent_model_id", "registered_model_id", "decision", "figures")


def _json(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


def start_run(ws: Workspace, out: str, config: dict[str, Any] | None = None, pid: int | None = None,
              host: str | None = None) -> int:
    """A new run row in state `starting`; returns its id."""
    t = now()
    with ws.db.atomic():
        return ws.db["trainer_runs"].insert({
            "out": str(out), "host": host or socket.gethostname(), "pid": os.getpid() if pid is None else pid,
            "state": "starting", "config": json.dumps(config or {}), "started_at": t, "updated_at": t}).last_pk


def update_run(ws: Workspace, run_id: int, **fields: Any) -> None:
    """Set some fields of a run (and its heartbeat) in one transaction."""
    bad = set(fields) - set(RUN_FIELDS)
    if bad:
        raise WorkspaceError(f"unknown trainer run field(s): {', '.join(sorted(bad))}")
    if "state" in fields and fields["state"] not in TRAINER_STATES:
        raise WorkspaceError(f"unknown trainer state {fields['state']!r} (one of {', '.join(TRAINER_STATES)})")
    changes = {k: _json(v) for k, v in fields.items()}
    changes["updated_at"] = now()
    with ws.db.atomic():
        ws.db["trainer_runs"].update(run_id, changes)


def _run_dict(row: dict[str, Any], stale_s: float) -> dict[str, Any]:
    out = dict(row)
    out["config"] = json.loads(out.get("config") or "{}")
    age = _age_s(out["updated_at"])
    out["heartbeat_age_s"] = age
    out["alive"] = (out["state"] in ACTIVE and age is not None and age <= stale_s
                    and not (out.get("host") == socket.gethostname() and not pid_running(out.get("pid"))))
    return out


def pid_running(pid: int | None) -> bool:
    """Whether a process of this machine is running (a run killed with SIGKILL is dead at once, not only
    once its heartbeat is stale)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    try:  # an ended process nobody has reaped yet (a container's init may never) is not running
        with open(f"/proc/{int(pid)}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _age_s(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()
    except ValueError:
        return None


def get_run(ws: Workspace, run_id: int, stale_s: float = STALE_S) -> dict[str, Any]:
    row = ws.db.execute("SELECT * FROM trainer_runs WHERE id=?", [run_id]).fetchone()
    if row is None:
        raise WorkspaceError(f"no trainer run with id {run_id}")
    cols = [c[0] for c in ws.db.execute("SELECT * FROM trainer_runs LIMIT 0").description]
    return _run_dict(dict(zip(cols, row)), stale_s)


def runs(ws: Workspace, limit: int = 20, stale_s: float = STALE_S) -> list[dict[str, Any]]:
    """The latest runs, newest first, each with `alive` (active and its heartbeat fresh) and its age."""
    cur = ws.db.execute("SELECT * FROM trainer_runs ORDER BY id DESC LIMIT ?", [limit])
    cols = [c[0] for c in cur.description]
    return [_run_dict(dict(zip(cols, r)), stale_s) for r in cur.fetchall()]


def latest_run(ws: Workspace, stale_s: float = STALE_S) -> dict[str, Any] | None:
    """The newest run that is alive, else the newest run at all (or None)."""
    rows = runs(ws, 20, stale_s)
    return next((r for r in rows if r["alive"]), rows[0] if rows else None)


def request_stop(ws: Workspace, run_id: int) -> None:
    """Ask a run to stop; the trainer sees it at its next heartbeat and stops cleanly."""
    with ws.db.atomic():
        ws.db.execute("UPDATE trainer_runs SET stop_requested_at=? WHERE id=? AND stop_requested_at IS NULL",
                      [now(), run_id])


def stop_requested(ws: Workspace, run_id: int) -> bool:
    row = ws.db.execute("SELECT stop_requested_at FROM trainer_runs WHERE id=?", [run_id]).fetchone()
    return bool(row and row[0])


def add_checkpoint(ws: Workspace, run_id: int, **fields: Any) -> int:
    """Log one evaluated checkpoint (registered or not); returns its row id. Call it inside the transaction
    that registers the model, so the model row and its gate record land together or not at all."""
    bad = set(fields) - set(CHECKPOINT_FIELDS)
    if bad:
        raise WorkspaceError(f"unknown checkpoint field(s): {', '.join(sorted(bad))}")
    row = {k: _json(v) for k, v in fields.items()}
    with ws.db.atomic():
        return ws.db["training_checkpoints"].insert({"run_id": run_id, "created_at": now(), **row}).last_pk


def checkpoints(ws: Workspace, run_id: int | None = None) -> list[dict[str, Any]]:
    """Logged checkpoints, oldest first (of one run, or of all), `figures` parsed."""
    where, params = ("WHERE run_id=?", [run_id]) if run_id is not None else ("", [])
    cur = ws.db.execute(f"SELECT * FROM training_checkpoints {where} ORDER BY id", params)
    cols = [c[0] for c in cur.description]
    out = []
    for r in cur.fetchall():
        d = dict(zip(cols, r))
        d["figures"] = json.loads(d.get("figures") or "{}")
        out.append(d)
    return out


def submitted_revisions(ws: Workspace, projects: Sequence[str] | None = None, split: str | None = None
                        ) -> dict[int, tuple[str, str, str]]:
    """Every submitted image of the projects (all by default), optionally of one split: image id ->
    (project, revision, submitted_at). The revision changes whenever the image is submitted again or one of
    its annotations changes, so a stream re-reads exactly the images that changed. One indexed query."""
    names = list(projects) if projects else None
    cur = ws.db.execute(
        "SELECT i.id, p.name, i.split_bucket, i.status_updated_at, "
        "(SELECT MAX(a.updated_at) FROM annotations a WHERE a.image_id = i.id) "
        "FROM images i JOIN projects p ON p.id = i.project_id WHERE i.status = 'submitted'")
    out: dict[int, tuple[str, str, str]] = {}
    for image_id, project, bucket, submitted, edited in cur.fetchall():
        if names is not None and project not in names:
            continue
        if split is not None and split_of(int(bucket)) != split:
            continue
        out[int(image_id)] = (project, f"{submitted or ''}|{edited or ''}", submitted or "")
    return out


def submitted_count(ws: Workspace, since: str | None = None, projects: Iterable[str] | None = None) -> int:
    """Submitted images (of some projects), optionally only those submitted after the time `since`."""
    sql = "SELECT COUNT(*) FROM images i JOIN projects p ON p.id = i.project_id WHERE i.status = 'submitted'"
    params: list[Any] = []
    if since:
        sql += " AND i.status_updated_at > ?"
        params.append(since)
    names = list(projects) if projects is not None else None
    if names is not None:
        sql += f" AND p.name IN ({','.join('?' * len(names))})" if names else " AND 1 = 0"
        params.extend(names)
    return int(ws.db.execute(sql, params).fetchone()[0])

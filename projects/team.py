"""Team work on one project, Qt-free: submitting a claimed image, and watching the team's progress.

`submit_claimed` is what an annotator's "submit" is on a team workspace outside the window (scripts,
`bench/bench_team.py`): the image is marked submitted by them, its lease is given back and a gold image is scored
(`labeler quality`), the status and the lease in one transaction. The window does the same through its submit
pipeline (`labeler.app.team`).

`ProgressWatcher` runs in a thread of its own, with its own connection, and calls back with each annotator's
figures (images submitted today, images held now) whenever they change: on PostgreSQL it LISTENs on the channel
that every claim, release and submit NOTIFYs (sent when their transaction commits), on SQLite it polls. Either
way it also refreshes every `poll_s`, since a lease running out notifies nobody.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from projects.errors import LabelerError
from projects.quality import QualityScore, score_submission
from projects.store.leases import PROGRESS_CHANNEL, check_user
from projects.workspace import Workspace

Progress = list[dict[str, Any]]  # Workspace.team_progress rows


def submit_claimed(ws: Workspace, image_id: int, user: str) -> QualityScore | None:
    """`user` submits an image they claimed: refused (`LeaseError`) when another annotator holds it now; else the
    image is submitted by `user` and its lease given back (one transaction), then scored if it is a gold image."""
    check_user(user)
    with ws.transaction():
        ws.check_not_held_by_another(image_id, user)
        ws.set_status(image_id, "submitted")
        ws.finish_lease(image_id, user)
    return score_submission(ws, image_id, author=user)


class ProgressWatcher:
    """Calls `on_progress(rows)` (from its own thread) with `Workspace.team_progress(project)` at start, on every
    change another annotator's window or script announces (PostgreSQL), and every `poll_s`; `on_error(message)`
    when the workspace cannot be read (it tries again after `poll_s`)."""

    def __init__(self, location: str, project: str, on_progress: Callable[[Progress], None],
                 on_error: Callable[[str], None] = lambda message: None, poll_s: float = 5.0,
                 open_workspace: Callable[[str], Workspace] = Workspace.open):
        self.location, self.project, self.poll_s = location, project, poll_s
        self.on_progress, self.on_error, self._open = on_progress, on_error, open_workspace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labeler-team-progress", daemon=True)

    def start(self) -> ProgressWatcher:
        self._thread.start()
        return self

    def stop(self, wait_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(wait_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._open(self.location) as ws:
                    self._watch(ws)
            except Exception as e:  # a lost server or a refused read: said, and tried again later
                self.on_error(str(e) if isinstance(e, LabelerError) else f"team progress: {type(e).__name__}: {e}")
                self._stop.wait(self.poll_s)

    def _watch(self, ws: Workspace) -> None:
        listening = ws.db.dialect == "postgresql"
        if listening:
            ws.db.execute(f"LISTEN {PROGRESS_CHANNEL}")
        while not self._stop.is_set():
            self.on_progress(ws.team_progress(self.project))
            if listening:
                self._wait_for_notice(ws)
            else:
                self._stop.wait(self.poll_s)

    def _wait_for_notice(self, ws: Workspace) -> None:
        """Until a claim, release or submit is announced, `poll_s` passes or the watcher is stopped (checked every
        half second: stopping never waits long)."""
        waited = 0.0
        while not self._stop.is_set() and waited < self.poll_s:
            if any(True for _ in ws.db.conn.notifies(timeout=0.5, stop_after=1)):
                return
            waited += 0.5

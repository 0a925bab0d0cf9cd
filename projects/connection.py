"""Opening a workspace's SQLite file: identify it first, then connect so that writers take turns.

Two rules keep several processes (the window, `labeler predict`, an import, the trainer) safe on one file:

- A file is identified **read-only** before anything is changed: a foreign SQLite file (another app's
  database, a file that only looks like SQLite) is refused without being switched to WAL, and a corrupt
  page is found by `PRAGMA quick_check` and reported as one line instead of surfacing later.
- Every write transaction begins `IMMEDIATE`: it takes the write lock up front and waits its turn (the
  busy timeout), with a bounded number of retries. A DEFERRED transaction that reads and then writes fails
  at once with "database is locked" when another writer committed in between, whatever the timeout; the
  IMMEDIATE one never does. A lock held longer than the whole wait becomes one clear `WorkspaceError`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from projects.errors import WorkspaceError

SQLITE_MAGIC = b"SQLite format 3\x00"


def busy_timeout_s() -> float:
    """How long one attempt waits for the write lock (LABELER_BUSY_TIMEOUT, seconds; default 10)."""
    try:
        return max(0.05, float(os.environ.get("LABELER_BUSY_TIMEOUT", "10")))
    except ValueError:
        return 10.0


LOCK_ATTEMPTS = 3  # each waits busy_timeout_s(); so a write waits at most about 3 × 10 s by default


def is_lock_error(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


class StoreDatabase(Database):
    """sqlite-utils' Database whose `atomic()` begins IMMEDIATE and turns a lasting lock into one line."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, path: Path):
        super().__init__(conn)
        self.path = path

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Many rows through one statement (bulk import); projects/store/postgres.py has the same call."""
        self.conn.executemany(sql, rows)

    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        self.conn.execute(f"PRAGMA user_version = {int(version)}")

    @contextmanager
    def atomic(self) -> Iterator[StoreDatabase]:
        if self.conn.in_transaction:  # nested: a savepoint inside the open transaction
            with super().atomic():
                yield self
            return
        self._begin_immediate()
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            self.rollback()
            if is_lock_error(e):
                raise self._busy(e) from e
            raise

    def row_locked(self) -> AbstractContextManager[StoreDatabase]:
        """What PostgreSQL runs side by side under row locks (a claim) is one IMMEDIATE transaction here: SQLite
        has one writer at a time, and taking its lock first is what keeps two claims from picking one image."""
        return self.atomic()

    def _begin_immediate(self) -> None:
        for attempt in range(LOCK_ATTEMPTS):
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if not is_lock_error(e):
                    raise
                if attempt == LOCK_ATTEMPTS - 1:
                    raise self._busy(e) from e
                time.sleep(0.05 * (attempt + 1))

    def _busy(self, e: BaseException) -> WorkspaceError:
        waited = LOCK_ATTEMPTS * busy_timeout_s()
        return WorkspaceError(f"{self.path}: the workspace is busy: another process held its write lock for more "
                              f"than {waited:.0f} s ({e}); nothing was written, try again")


def identify(path: Path, app_id: str) -> int:
    """Check read-only that `path` is a healthy Labeler workspace; returns its schema version.

    Nothing is written to a file that turns out not to be ours (no WAL switch, no -wal/-shm files left).

    The file is read through SQLite only, never with a plain `open()`: closing any other descriptor of the file
    drops every POSIX lock this process holds on it (SQLite's "posix advisory locks canceled by close()"), so a
    second `Workspace.open` in a process that already has the workspace open (the window and its prediction
    worker, the follow trainer and its stream) would let another process delete the WAL under the first
    connection, whose later commits then became invisible to every other process.
    """
    if not os.access(path, os.R_OK):
        raise WorkspaceError(f"{path}: cannot read (permission denied)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=busy_timeout_s())
    except sqlite3.Error as e:
        raise WorkspaceError(f"{path}: cannot open ({e})") from e
    try:
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            row = conn.execute("SELECT value FROM meta WHERE key='app'").fetchone() if "meta" in tables else None
        except sqlite3.DatabaseError as e:
            if is_lock_error(e):
                raise WorkspaceError(f"{path}: the workspace is busy ({e}); try again") from e
            if "file is not a database" in str(e):
                raise WorkspaceError(f"{path}: not a Labeler workspace (not an SQLite file)") from e
            raise WorkspaceError(f"{path}: not a Labeler workspace, or damaged ({e})") from e
        if row is None or row[0] != app_id:
            raise WorkspaceError(f"{path}: an SQLite file, but not a Labeler workspace")
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as e:
            problems = [str(e)]
        if problems != ["ok"]:
            raise WorkspaceError(f"{path}: the workspace file is damaged ({'; '.join(problems)[:300]}); restore it "
                                 "from a backup (`sqlite3 labeler.sqlite .recover` may save what is left)")
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def connect(path: Path) -> StoreDatabase:
    """A read-write connection in autocommit mode (isolation_level=None: `atomic()` issues BEGIN/COMMIT
    itself and nothing is left pending), WAL, foreign keys on, and the busy timeout for every statement."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=busy_timeout_s(), check_same_thread=False)
    except sqlite3.Error as e:
        raise WorkspaceError(f"{path}: cannot open ({e})") from e
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
    except sqlite3.DatabaseError as e:
        conn.close()
        if is_lock_error(e):
            raise WorkspaceError(f"{path}: the workspace is busy ({e}); try again") from e
        raise WorkspaceError(f"{path}: not a Labeler workspace ({e})") from e
    return StoreDatabase(conn, path)

"""A second connection to a workspace in one process never hides the first one's commits from other processes.

Found with the follow trainer: its stream opens the workspace a second time in a thread. `Workspace.open`
used to read the file's header with a plain `open()`; closing that descriptor dropped every POSIX lock the
process held on the file, so another process closing its last connection deleted the WAL under the first
connection, whose later commits then went to an unlinked file: no other process saw them (the window
would not have seen the trainer's status, nor the trainer the window's submissions).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from projects.workspace import Workspace, WorkspaceError

PEEK = "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(*) FROM projects').fetchone()[0])"


def _count_elsewhere(path) -> int:
    out = subprocess.run([sys.executable, "-c", PEEK, str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_commits_stay_visible_to_other_processes_after_a_second_open(tmp_path):
    Workspace.create(tmp_path / "ws").close()
    ws = Workspace.open(tmp_path / "ws")
    second = Workspace.open(tmp_path / "ws")  # as a worker thread does
    try:
        for k in range(1, 4):
            ws.add_project(f"P{k}")
            assert _count_elsewhere(ws.db_path(ws.folder)) == k  # each reader process opens and closes
    finally:
        second.close()
        ws.close()


def test_a_file_that_is_not_sqlite_is_still_refused_in_one_line(tmp_path):
    (tmp_path / "labeler.sqlite").write_bytes(b"hello, this is a text file and not a database at all" * 10)
    with pytest.raises(WorkspaceError, match="not a Labeler workspace \\(not an SQLite file\\)"):
        Workspace.open(tmp_path)

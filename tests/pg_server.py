"""A throwaway PostgreSQL server for the tests: Debian's binaries (`pg_config --bindir`), a fresh data folder,
a free TCP port on 127.0.0.1 with trust authentication, stopped at the end of the session (also on Ctrl-C).

initdb refuses to run as root, so as root the server runs as the `postgres` user (`runuser`), its data
folder owned by it. Settings are light: fsync off, small shared buffers (a test server holds nothing worth
keeping). Each test gets a database of its own (`CREATE DATABASE ... TEMPLATE template0`).

Missing binaries skip the PostgreSQL tests with the reason, unless LABELER_REQUIRE_POSTGRES=1 (CI) fails them.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

REQUIRE_ENV = "LABELER_REQUIRE_POSTGRES"
BINDIR_ENV = "LABELER_PG_BINDIR"  # another PostgreSQL installation's bin folder
SUPERUSER = "labeler"


class Unavailable(Exception):
    """No PostgreSQL server binaries here (the reason says what is missing)."""


def bindir() -> Path:
    """The folder holding initdb, pg_ctl and postgres (LABELER_PG_BINDIR, else `pg_config --bindir`, else
    Debian's /usr/lib/postgresql/*/bin)."""
    found = shutil.which("pg_config")
    candidates = []
    if os.environ.get(BINDIR_ENV):
        found, candidates = None, [Path(os.environ[BINDIR_ENV])]
    elif found:
        try:
            candidates.append(Path(subprocess.run([found, "--bindir"], capture_output=True, text=True, check=True,
                                                  timeout=10).stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    if not os.environ.get(BINDIR_ENV):
        candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file() and (c / "postgres").is_file():
            return c
    raise Unavailable("PostgreSQL server binaries not found (no initdb/pg_ctl via `pg_config --bindir` or "
                      "/usr/lib/postgresql/*/bin); install Debian's `postgresql` package")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self) -> None:
        self.bin = bindir()
        self.as_root = os.geteuid() == 0
        if self.as_root and shutil.which("runuser") is None:
            raise Unavailable("running as root and `runuser` is missing: initdb cannot run as root")
        self.base = Path(tempfile.mkdtemp(prefix="labeler-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self.started = False
        self._names = itertools.count(1)

    def _run(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        full = ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else list(cmd)
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, start_new_session=True)  # Ctrl-C reaches pytest only

    def start(self) -> PgServer:
        if self.as_root:
            shutil.chown(self.base, "postgres", "postgres")
        r = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", SUPERUSER,
                      "-E", "UTF8", "--no-locale", "--no-sync")
        if r.returncode:
            raise RuntimeError(f"initdb failed: {r.stderr.strip()[-2000:]}")
        options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB "
                   "-c max_connections=60")
        r = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"), "-o", options,
                      "-w", "-t", "60", "start")
        if r.returncode:
            log = (self.base / "log").read_text(errors="replace")[-2000:] if (self.base / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()[-1000:]} {log}")
        self.started = True
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        if self.started:
            self.started = False
            r = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
            if r.returncode:  # last resort: the postmaster's pid
                pid_file = self.data / "postmaster.pid"
                if pid_file.exists():
                    try:
                        os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
                    except (OSError, ValueError):
                        pass
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, dbname: str, user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def add_password_login(self, user: str, password: str) -> str:
        """A superuser `user` that must give `password` (scram-sha-256; every other login keeps trust), for
        tests that prove a password reaches a process through libpq's environment. Returns the user."""
        import time

        import psycopg

        hba = self.data / "pg_hba.conf"
        rule = f"host all {user} 127.0.0.1/32 scram-sha-256\n"
        text = hba.read_text()
        if rule not in text:
            hba.write_text(rule + text)  # the first matching line wins
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [user]).fetchone() is None:
                conn.execute(f'CREATE ROLE "{user}" LOGIN SUPERUSER')
            conn.execute(f"ALTER ROLE \"{user}\" PASSWORD '{password}'")
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10  # the postmaster rereads pg_hba.conf on its SIGHUP, soon after
        while time.monotonic() < deadline:
            try:
                psycopg.connect(self.url("postgres", user), password="", connect_timeout=5).close()
            except psycopg.OperationalError:
                return user
            time.sleep(0.05)
        raise RuntimeError(f"the server still lets {user} in without a password")

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

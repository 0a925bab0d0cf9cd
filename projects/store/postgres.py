"""A workspace on PostgreSQL: a thin adapter over psycopg 3 with the part of sqlite-utils' `Database` API the
store uses, so the store keeps ONE set of queries for both backends.

Why an adapter and not SQLAlchemy Core: the store's ~150 queries are plain, readable SQL with `?`
placeholders, and its writes use sqlite-utils' table calls (`db["annotations"].insert(row).last_pk`).
Rewriting every query as Core expressions would touch every line of the store, add a dependency on the
SQLite path (which must keep its speed) and make the SQL harder to read. What differs between the two
dialects is small and lives here or in a portable spelling in the query itself:

- placeholders: `?` becomes `%s` (and a literal `%` becomes `%%`), once per distinct query (cached);
- `insert(row).last_pk` is `INSERT ... RETURNING id`; `upsert` is `INSERT ... ON CONFLICT (pk) DO UPDATE`;
- `x IS ?` (NULL-safe equality) is written `x IS NOT DISTINCT FROM ?`, which both run (SQLite >= 3.39);
  `COALESCE` rather than `IFNULL`; no integer used as a boolean;
- the schema version lives in the `meta` table (SQLite keeps `PRAGMA user_version`).

`atomic()` keeps the store's SQLite semantics: all or nothing, a nested call is a savepoint, and write
transactions take turns — each takes one transaction-level advisory lock first, as SQLite's BEGIN IMMEDIATE
takes the write lock, so a read-then-write inside it (a duplicate-name check, a label's position) sees no
other writer's half-way state. Readers are never blocked (MVCC). The wait is bounded by `lock_timeout`
(LABELER_BUSY_TIMEOUT x attempts, as on SQLite) and a longer one is one clear `WorkspaceError`.

Connection failures, a lost server and lock timeouts become one-line `WorkspaceError`s naming the URL with
any password redacted; constraint violations stay `psycopg.IntegrityError` (a bug, as on SQLite).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq

from projects.connection import LOCK_ATTEMPTS, busy_timeout_s
from projects.errors import PermissionDeniedError, WorkspaceError, WriteConflictError
from projects.store.target import check_url, redact

WRITE_LOCK = 0x4C424C52  # "LBLR": the advisory lock every write transaction takes first
NO_ID_TABLES = {"meta": "key", "predicted_images": ("image_id", "model_id"), "gold_images": "image_id"}


@functools.lru_cache(maxsize=4096)
def to_pg(sql: str) -> str:
    """A query written with SQLite's `?` placeholders in psycopg's `%s` style (quoted text left alone)."""
    out, quote = [], None
    for ch in sql:
        if quote:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def one_line(e: BaseException, limit: int = 300) -> str:
    text = "; ".join(line.strip() for line in str(e).strip().splitlines() if line.strip()) or type(e).__name__
    text = redact(text)
    return text if len(text) <= limit else text[:limit] + "…"


class _Inserted:
    def __init__(self, last_pk: Any):
        self.last_pk = last_pk


class PgTable:
    """`db["name"]`: the sqlite-utils table calls the store makes, in PostgreSQL."""

    def __init__(self, db: PgDatabase, name: str):
        self.db, self.name = db, name
        self.pk = NO_ID_TABLES.get(name, "id")

    def _insert_sql(self, columns: Sequence[str], returning: bool) -> str:
        cols = ", ".join(map(_ident, columns))
        marks = ", ".join("?" * len(columns))
        back = " RETURNING id" if returning and self.pk == "id" else ""
        return f"INSERT INTO {_ident(self.name)} ({cols}) VALUES ({marks}){back}"

    def insert(self, row: dict[str, Any]) -> _Inserted:
        cur = self.db.execute(self._insert_sql(list(row), True), list(row.values()))
        if self.pk == "id":
            return _Inserted(cur.fetchone()[0])
        return _Inserted(row.get(self.pk) if isinstance(self.pk, str) else tuple(row.get(k) for k in self.pk))

    def insert_all(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if rows:
            columns = list(rows[0])
            self.db.executemany(self._insert_sql(columns, False), [[r.get(c) for c in columns] for r in rows])

    def upsert(self, row: dict[str, Any], pk: str | Sequence[str]) -> None:
        keys = [pk] if isinstance(pk, str) else list(pk)
        rest = [c for c in row if c not in keys]
        action = (f"DO UPDATE SET {', '.join(f'{_ident(c)} = EXCLUDED.{_ident(c)}' for c in rest)}" if rest
                  else "DO NOTHING")
        self.db.execute(f"{self._insert_sql(list(row), False)} ON CONFLICT ({', '.join(map(_ident, keys))}) {action}",
                        list(row.values()))

    def update(self, pk_value: Any, changes: dict[str, Any]) -> None:
        self.get(pk_value)  # sqlite-utils raises NotFoundError for a missing row: so does this
        if changes:
            sets = ", ".join(f"{_ident(c)} = ?" for c in changes)
            self.db.execute(f"UPDATE {_ident(self.name)} SET {sets} WHERE id = ?", [*changes.values(), pk_value])

    def get(self, pk_value: Any) -> dict[str, Any]:
        from sqlite_utils.db import NotFoundError

        cur = self.db.execute(f"SELECT * FROM {_ident(self.name)} WHERE id = ?", [pk_value])
        row = cur.fetchone()
        if row is None:
            raise NotFoundError
        return dict(zip([c[0] for c in cur.description], row))

    @property
    def rows(self) -> Iterator[dict[str, Any]]:
        cur = self.db.execute(f"SELECT * FROM {_ident(self.name)}")
        cols = [c[0] for c in cur.description]
        for row in cur:
            yield dict(zip(cols, row))

    @property
    def columns_dict(self) -> dict[str, str]:
        cur = self.db.execute("SELECT column_name, data_type FROM information_schema.columns WHERE "
                              "table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
                              [self.name])
        return dict(cur.fetchall())


class PgDatabase:
    """One connection to a team workspace, in autocommit mode: `atomic()` opens the transactions."""

    dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection, url: str):
        self.conn, self.url = conn, url

    # --- statements ------------------------------------------------------------------------
    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.errors.InsufficientPrivilege as e:
            raise PermissionDeniedError(
                f"{redact(self.url)}: {one_line(e, 120)} (login {self.conn.info.user!r}): an annotator labels and "
                "submits; taxonomies, projects and models are changed by an admin (`labeler team grant`, "
                "docs/team.md)") from e
        except psycopg.errors.TransactionRollback as e:  # a deadlock or serialization failure the server broke
            raise WriteConflictError(f"{redact(self.url)}: a concurrent write got in the way ({one_line(e, 120)}); "
                                     "nothing was written, try again") from e
        except psycopg.errors.LockNotAvailable as e:
            waited = LOCK_ATTEMPTS * busy_timeout_s()
            raise WorkspaceError(f"{redact(self.url)}: the workspace is busy: another writer held it for more than "
                                 f"{waited:.0f} s; nothing was written, try again") from e
        except psycopg.OperationalError as e:
            raise WorkspaceError(f"{redact(self.url)}: the database connection failed ({one_line(e)})") from e

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> psycopg.Cursor:
        with self._errors():
            return self.conn.execute(to_pg(sql), list(params) if params is not None else None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._errors(), self.conn.cursor() as cur:
            cur.executemany(to_pg(sql), rows)

    def __getitem__(self, name: str) -> PgTable:
        return PgTable(self, name)

    def table_names(self) -> list[str]:
        return [r[0] for r in self.execute("SELECT table_name FROM information_schema.tables WHERE "
                                           "table_schema = current_schema() ORDER BY table_name")]

    # --- transactions ------------------------------------------------------------------------
    @contextmanager
    def atomic(self) -> Iterator[PgDatabase]:
        if self.conn.info.transaction_status != pq.TransactionStatus.IDLE:  # nested: a savepoint
            with self._errors(), self.conn.transaction():
                yield self
            return
        with self._errors(), self.conn.transaction():
            wait_ms = int(LOCK_ATTEMPTS * busy_timeout_s() * 1000)
            self.conn.execute(f"SET LOCAL lock_timeout = {wait_ms}")
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
            self.conn.execute("SET LOCAL lock_timeout = 0")
            yield self

    @contextmanager
    def row_locked(self) -> Iterator[PgDatabase]:
        """A transaction that does not take the write turn: for writes that lock only the rows they change, so
        that they run side by side (a claim: `SELECT ... FOR UPDATE SKIP LOCKED`, then an upsert of each lease
        row that only succeeds while the lease is free). Nested: a savepoint, as `atomic()`."""
        with self._errors(), self.conn.transaction():
            yield self

    # --- schema version --------------------------------------------------------------------
    def schema_version(self) -> int:
        if self.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
            return 0  # an empty database
        row = self.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def set_schema_version(self, version: int) -> None:
        self["meta"].upsert({"key": "schema_version", "value": str(int(version))}, pk="key")

    def close(self) -> None:
        self.conn.close()


def connect(url: str) -> PgDatabase:
    """A connection to the database the URL names (credentials from libpq's environment and files). Its
    application name is PGAPPNAME when set (a rank of a distributed run names itself so), else `labeler`."""
    check_url(url)
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10,
                               application_name=os.environ.get("PGAPPNAME") or "labeler")
    except psycopg.Error as e:
        raise WorkspaceError(f"{redact(url)}: cannot connect ({one_line(e)})") from e
    return PgDatabase(conn, url)


def identify(db: PgDatabase, app_id: str) -> int:
    """The schema version of a Labeler workspace in this database; one line naming the URL if it is not one.
    Reads only: nothing is created in a database that turns out not to be ours."""
    shown = redact(db.url)
    if db.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
        tables = db.table_names()
        raise WorkspaceError(f"{shown}: not a Labeler workspace (" + (f"the database holds {len(tables)} other "
                             "tables)" if tables else "an empty database; create one with `labeler init URL "
                             "--image-root DIR`)"))
    row = db.execute("SELECT value FROM meta WHERE key = 'app'").fetchone()
    if row is None or row[0] != app_id:
        raise WorkspaceError(f"{shown}: a PostgreSQL database, but not a Labeler workspace")
    return db.schema_version()

"""`labeler workspace copy SRC DST`: a workspace copied between backends (SQLite folder ↔ PostgreSQL URL, or
folder → folder), every table and every id kept, its images referenced (or copied), verified before it counts.

Why it is safe to interrupt: DST only ever changes at one instant. A PostgreSQL destination is built in ONE
transaction (schema, rows, identity sequences, verification) that commits last; an exception, Ctrl-C or a
SIGKILL of this process (the server sees the connection drop) rolls all of it back, so the database stays
empty. A folder destination is built in a hidden staging folder beside it (`.NAME.copy-PID`) and renamed
onto DST at the end (rename(2) is atomic, and replaces DST only if it is missing or an empty folder); a
SIGKILL leaves the staging folder, which the next copy to the same DST removes. The source is read in one
snapshot (a read transaction), so annotators may keep working on it meanwhile: the copy is the workspace as
it was when the copy began.

What is verified before the commit or rename: the destination has the source's tables and columns; every
table holds as many rows as the source's snapshot (and as many as were written); SQLite's foreign keys
hold (`PRAGMA foreign_key_check`, since a folder destination is loaded with them off); every image row's
path resolves, under the destination's image root, to a file whose SHA-256 is the row's `sha256`.

Paths: image and model paths are stored relative to the workspace folder (SQLite) or the image root
(PostgreSQL), else absolute. Each is resolved against the source's root and stored again relative to the
destination's root when it lies under it, else absolute — a team (PostgreSQL) destination refuses an image
outside its image root, as `labeler images add` does. `copy_images` copies every image file to that folder
first (its path under the source root kept; an absolute path's folders kept below DIR), so the copy can
move to other storage; a file already there with the same content is reused, one with other content is
never overwritten. Model checkpoints are referenced, not copied.

Every table is copied, the prediction cache included. Kept per destination: `meta`'s schema version and
image root. PostgreSQL roles and grants are not rows: grant them on the new database as docs/team.md says.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from projects.errors import WorkspaceError
from projects.imaging import ImageError, file_sha256
from projects.schema import MIGRATIONS, SCHEMA_VERSION
from projects.store.target import display, is_url, normalize, redact

CHUNK = 10_000  # rows per read and per progress call
LOCAL_META = ("schema_version", "image_root")  # meta keys that belong to one backend, never copied
PATH_COLUMNS = {("images", "path"): "image", ("models", "path"): "model"}  # stored paths rewritten per root
Progress = Callable[[str, int, int], None]  # (table, rows done, rows in the table)


@dataclass
class CopyReport:
    source: str
    destination: str
    tables: dict[str, int] = field(default_factory=dict)  # rows per table, equal on both sides
    images_verified: int = 0  # distinct image files whose content hash was checked
    images_copied: int = 0
    images_reused: int = 0  # already in the copy folder with the same content
    image_root: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the source: one read snapshot ----------------------------------------------------------------------
@contextmanager
def _snapshot(db: Any) -> Iterator[None]:
    """One read transaction over the whole copy: counts and rows come from the same instant."""
    if db.dialect == "postgresql":
        db.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    else:
        db.execute("BEGIN")
    try:
        yield
    finally:
        db.execute("ROLLBACK")  # read only: nothing to keep


def _read(db: Any, table: str, columns: list[str], order: bool) -> Iterator[list[tuple]]:
    """The rows of `table` in chunks, in id order (a server-side cursor on PostgreSQL: constant memory)."""
    sql = f"SELECT {', '.join(map(_q, columns))} FROM {_q(table)}{' ORDER BY id' if order else ''}"
    if db.dialect == "postgresql":
        with db.conn.cursor(name=f"labeler_copy_{table}") as cur:
            cur.itersize = CHUNK
            cur.execute(sql)
            while rows := cur.fetchmany(CHUNK):
                yield rows
        return
    cur = db.execute(sql)
    while rows := cur.fetchmany(CHUNK):
        yield rows


def _tables(db: Any) -> dict[str, list[str]]:
    """Table -> columns, in the order the table declares them."""
    if db.dialect == "postgresql":
        out: dict[str, list[str]] = {}
        for table, column in db.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
                "current_schema() ORDER BY table_name, ordinal_position"):
            out.setdefault(table, []).append(column)
        return out
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                                      "'sqlite_%' ORDER BY name")]
    return {t: [r[1] for r in db.execute(f"PRAGMA table_info({_q(t)})")] for t in names}


def _parents(db: Any) -> dict[str, set[str]]:
    """Table -> the tables its foreign keys reference (itself left out)."""
    out: dict[str, set[str]] = {}
    if db.dialect == "postgresql":
        for child, parent in db.execute(
                "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c "
                "JOIN pg_namespace n ON n.oid = c.connamespace WHERE c.contype = 'f' AND n.nspname = current_schema()"):
            out.setdefault(child.strip('"'), set()).add(parent.strip('"'))
    else:
        for t in _tables(db):
            out[t] = {r[2] for r in db.execute(f"PRAGMA foreign_key_list({_q(t)})")}
    return {t: {p for p in ps if p != t} for t, ps in out.items()}


def _load_order(tables: list[str], parents: dict[str, set[str]]) -> list[str]:
    """Parents before children, so every foreign key finds its row (ties in name order)."""
    order: list[str] = []
    left = sorted(tables)
    while left:
        ready = [t for t in left if not (parents.get(t, set()) & set(left))]
        if not ready:
            raise WorkspaceError(f"the tables {', '.join(left)} reference each other in a cycle; cannot order them")
        order += ready
        left = [t for t in left if t not in ready]
    return order


def _count(db: Any, table: str) -> int:
    where = f" WHERE key NOT IN ({', '.join('?' * len(LOCAL_META))})" if table == "meta" else ""
    return int(db.execute(f"SELECT COUNT(*) FROM {_q(table)}{where}",
                          list(LOCAL_META) if where else []).fetchone()[0])


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- paths ---------------------------------------------------------------------------------------------
def _stored(target: Path, root: Path) -> str:
    """A path as a workspace rooted at `root` stores it: relative when under the root, else absolute."""
    target = Path(os.path.normpath(target))
    try:
        return target.relative_to(root).as_posix()
    except ValueError:
        return str(target)


@dataclass
class _ImagePlan:
    """Where each source image path goes and what the destination stores for it."""

    stored: dict[str, str]  # source stored path -> destination stored path
    files: dict[str, tuple[Path, str]]  # destination stored path -> (file to check now, sha256)


# --- destinations: build, verify, then one commit or one rename ---------------------------------------------
class _FolderDestination:
    """A SQLite workspace folder, built in a staging folder beside it and renamed onto it at the end."""

    dialect = "sqlite"

    def __init__(self, target: str | Path, image_root: str | Path | None):
        if image_root is not None:
            raise WorkspaceError(f"{target}: --image-root is for a PostgreSQL destination; a folder workspace "
                                 "stores image paths relative to itself")
        self.path = Path(target).expanduser()
        if self.path.suffix == ".sqlite":
            raise WorkspaceError(f"{target}: name the destination workspace folder, not its database file")
        self.root = Path(os.path.abspath(self.path.resolve()))
        if self.path.exists() and not self.path.is_dir():
            raise WorkspaceError(f"{target}: exists and is not a folder; the destination must be a new or empty folder")
        if self.path.is_dir() and any(self.path.iterdir()):
            raise WorkspaceError(f"{target}: the destination folder is not empty; copy into a new or empty folder "
                                 "(nothing was written)")
        self.staging = self.root.parent / f".{self.root.name}.copy-{os.getpid()}"
        self._clear_stale()

    def place(self, path: Path) -> Path:
        """Where a file bound for `path` is written now: inside DST it goes to the staging folder."""
        try:
            return self.staging / Path(os.path.normpath(path)).relative_to(self.root)
        except ValueError:
            return path

    def _clear_stale(self) -> None:
        if not self.root.parent.is_dir():
            return
        for old in self.root.parent.glob(f".{self.root.name}.copy-*"):
            pid = old.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)) and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)  # a SIGKILLed copy's staging folder

    @contextmanager
    def building(self) -> Iterator[Any]:
        from projects.connection import connect
        from projects.workspace import DB_NAME

        self.staging.mkdir(parents=True, exist_ok=True)  # copied images may be there already
        db = None
        try:
            db = connect(self.staging / DB_NAME)
            for version in range(SCHEMA_VERSION):
                with db.atomic():
                    MIGRATIONS[version](db)
                    db.set_schema_version(version + 1)
            db.execute("PRAGMA foreign_keys = OFF")  # rows arrive table by table; checked at the end
            db.execute("PRAGMA synchronous = OFF")  # a staging file: made durable by the fsync before the rename
            with db.atomic():
                yield db
                problems = db.execute("PRAGMA foreign_key_check").fetchmany(3)
                if problems:
                    raise WorkspaceError(f"{self.path}: the copy breaks foreign keys ({problems}); nothing was written")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()
            db = None
            _fsync_tree(self.staging)
            try:
                os.rename(self.staging, self.root)  # atomic; replaces only a missing or empty folder
            except OSError as e:
                raise WorkspaceError(f"{self.path}: appeared or filled up while copying ({e.strerror}); nothing was "
                                     "written to it") from e
            _fsync_dir(self.root.parent)
        finally:
            if db is not None:
                db.close()

    def discard(self) -> None:
        """After a failure: the staging folder goes (DST itself was never touched)."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def write(self, db: Any, table: str, columns: list[str], rows: list[tuple]) -> None:
        marks = ", ".join("?" * len(columns))
        db.executemany(f"INSERT INTO {_q(table)} ({', '.join(map(_q, columns))}) VALUES ({marks})", rows)

    def finish(self, db: Any, tables: dict[str, list[str]]) -> None:
        """Nothing to do: SQLite's next id is max(id) + 1."""


class _PostgresDestination:
    """An empty PostgreSQL database, filled in one transaction that commits last."""

    dialect = "postgresql"

    def __init__(self, url: str, image_root: str | Path | None, copy_images: Path | None):
        from projects.store import postgres

        self.url = url
        if image_root is None and copy_images is None:
            raise WorkspaceError(f"{redact(url)}: a PostgreSQL destination needs --image-root DIR (the shared folder "
                                 "its images lie under) or --copy-images DIR (which then becomes the image root)")
        root = Path(image_root if image_root is not None else copy_images).expanduser()
        if image_root is not None and not root.is_dir():
            raise WorkspaceError(f"{image_root}: the image root is not a folder (create it on shared storage first)")
        self.root = Path(os.path.abspath(root.resolve()))
        self.db = postgres.connect(url)
        try:
            self._check_empty()
        except BaseException:
            self.db.close()
            raise

    def _check_empty(self) -> None:
        from projects.store import postgres
        from projects.workspace import APP_ID

        shown = redact(self.url)
        if self.db.execute("SELECT to_regclass('meta')").fetchone()[0] is not None:
            postgres.identify(self.db, APP_ID)  # another application's database: says so
            raise WorkspaceError(f"{shown}: the destination already holds a workspace; copy into an empty database "
                                 "(CREATE DATABASE ...); nothing was written")
        if tables := self.db.table_names():
            raise WorkspaceError(f"{shown}: the destination database holds {len(tables)} tables; copy into an empty "
                                 "database (CREATE DATABASE ...); nothing was written")

    def place(self, path: Path) -> Path:
        return path

    def discard(self) -> None:
        """After a failure: the transaction was rolled back (or dies with this process); close the connection."""
        self.db.close()

    @contextmanager
    def building(self) -> Iterator[Any]:
        from projects.store.pg_schema import PG_MIGRATIONS

        db = self.db
        try:
            with db.atomic():  # the write lock, then ONE transaction for schema, rows and checks
                self._check_empty()  # again under the lock: a concurrent copy or init won first
                for version in range(SCHEMA_VERSION):
                    PG_MIGRATIONS[version](db)
                db.set_schema_version(SCHEMA_VERSION)
                db["meta"].upsert({"key": "image_root", "value": str(self.root)}, pk="key")
                yield db
        finally:
            db.close()

    def write(self, db: Any, table: str, columns: list[str], rows: list[tuple]) -> None:
        with db._errors(), db.conn.cursor() as cur, \
                cur.copy(f"COPY {_q(table)} ({', '.join(map(_q, columns))}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def finish(self, db: Any, tables: dict[str, list[str]]) -> None:
        """Each identity sequence continues after the highest copied id, so the next insert gets a new one."""
        for table, columns in tables.items():
            if "id" not in columns:
                continue
            seq = db.execute("SELECT pg_get_serial_sequence(?, 'id')", [_q(table)]).fetchone()[0]
            if seq:
                db.execute(f"SELECT setval(?, COALESCE((SELECT MAX(id) FROM {_q(table)}), 1), "
                           f"(SELECT COUNT(*) > 0 FROM {_q(table)}))", [seq])


def _destination(target: str | Path, image_root: str | Path | None, copy_images: Path | None):
    if is_url(target):
        return _PostgresDestination(str(normalize(target)), image_root, copy_images)
    return _FolderDestination(target, image_root)


# --- the copy ------------------------------------------------------------------------------------------------
def copy_workspace(source: str | Path, target: str | Path, *, image_root: str | Path | None = None,
                   copy_images: str | Path | None = None, check_images: bool = True,
                   progress: Progress | None = None) -> CopyReport:
    """Copy the workspace at `source` to `target` (a new or empty folder, or an empty PostgreSQL database);
    see the module docstring. Raises WorkspaceError (or ImageError) with nothing written to `target`."""
    from projects.workspace import Workspace

    started = time.perf_counter()
    copy_dir = Path(copy_images).expanduser().resolve() if copy_images is not None else None
    src = Workspace.open(source)
    try:
        dest = _destination(target, image_root, copy_dir)
        report = CopyReport(display(src.location), display(target), image_root=str(dest.root))
        try:
            _copy(src, dest, copy_dir, report, check_images, progress)
        except BaseException:
            dest.discard()
            raise
    finally:
        src.close()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _copy(src: Any, dest: Any, copy_dir: Path | None, report: CopyReport, check_images: bool,
          progress: Progress | None) -> None:
    with _snapshot(src.db):
        src_tables = _tables(src.db)
        plan = _plan_images(src, dest, copy_dir, report, check_images)
        models = {p: _stored(src.image_path(p), dest.root)
                  for (p,) in src.db.execute("SELECT DISTINCT path FROM models").fetchall()}
        with dest.building() as db:
            dst_tables = _tables(db)
            _check_same_schema(src_tables, dst_tables, report.destination)
            order = _load_order(list(src_tables), _parents(db))
            db.execute("DELETE FROM meta WHERE key NOT IN (?, ?)", list(LOCAL_META))
            rewrite = {"image": plan.stored, "model": models}
            for table in order:
                report.tables[table] = _copy_table(src.db, dest, db, table, src_tables[table], rewrite, progress)
            dest.finish(db, dst_tables)
            _verify(src.db, db, report, plan, check_images)


def _check_same_schema(src: dict[str, list[str]], dst: dict[str, list[str]], shown: str) -> None:
    for table in sorted(set(src) | set(dst)):
        if set(src.get(table, [])) != set(dst.get(table, [])):
            only_src = sorted(set(src.get(table, [])) - set(dst.get(table, [])))
            only_dst = sorted(set(dst.get(table, [])) - set(src.get(table, [])))
            raise WorkspaceError(f"{shown}: table {table!r} differs between the backends (source only: "
                                 f"{only_src or '-'}, destination only: {only_dst or '-'}); nothing was written")


def _copy_table(src_db: Any, dest: Any, db: Any, table: str, columns: list[str], rewrite: dict[str, dict[str, str]],
                progress: Progress | None) -> int:
    total = _count(src_db, table)
    paths = {columns.index(c): rewrite[kind] for (t, c), kind in PATH_COLUMNS.items() if t == table}
    meta_key = columns.index("key") if table == "meta" else None
    done = 0
    for rows in _read(src_db, table, columns, order="id" in columns):
        if meta_key is not None:
            rows = [r for r in rows if r[meta_key] not in LOCAL_META]
        for i, mapping in paths.items():
            rows = [(*r[:i], mapping[r[i]], *r[i + 1:]) for r in rows]
        dest.write(db, table, columns, rows)
        done += len(rows)
        if progress is not None:
            progress(table, done, total)
    if progress is not None and done == 0:
        progress(table, 0, total)
    return done


def _plan_images(src: Any, dest: Any, copy_dir: Path | None, report: CopyReport, check: bool) -> _ImagePlan:
    """Decide every image's destination path; copy the files when asked; hash what the destination will read."""
    rows = src.db.execute("SELECT path, MIN(sha256), COUNT(DISTINCT sha256) FROM images GROUP BY path").fetchall()
    plan = _ImagePlan({}, {})
    outside: list[str] = []
    copies: list[tuple[Path, Path, str]] = []
    for path, sha, kinds in rows:
        origin = Path(os.path.normpath(src.image_path(path)))
        if kinds > 1:
            raise WorkspaceError(f"{origin}: two image rows name this file with different content hashes; "
                                 "fix the source first (nothing was written)")
        final = origin
        if copy_dir is not None:
            rel = Path(path) if not Path(path).is_absolute() else origin.relative_to(origin.anchor)
            final = copy_dir / rel
            copies.append((origin, final, sha))
        stored = _stored(final, dest.root)
        if dest.dialect == "postgresql" and Path(stored).is_absolute():
            outside.append(str(final))
        plan.stored[path] = stored
        plan.files[stored] = (dest.place(final), sha)
    if outside:
        raise WorkspaceError(f"{outside[0]}: outside the destination's image root {dest.root} ({len(outside)} "
                             "images are); choose an --image-root above them, or --copy-images DIR under it "
                             "(nothing was written)")
    if copies:
        for origin, final, sha in copies:
            reused = _copy_file(origin, dest.place(final), sha)
            report.images_reused += reused
            report.images_copied += not reused
    if check:
        _check_hashes(plan)
    report.images_verified = len(plan.files) if check else 0
    return plan


def _copy_file(origin: Path, final: Path, sha: str) -> bool:
    """Copy one image, never overwriting: True if `final` already held the same content. The copy is
    hashed as it is written, so a source file that no longer matches its row is refused."""
    if final.exists():
        if _sha_or_none(final) == sha:
            return True
        raise WorkspaceError(f"{final}: already exists with other content; not overwritten (nothing was written "
                             "to the destination)")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".copy-", dir=final.parent)
    os.close(fd)
    try:
        shutil.copyfile(origin, tmp)
        got = file_sha256(tmp)
        if got != sha:
            raise WorkspaceError(f"{origin}: the file changed since it was added (its content hash differs); "
                                 "restore it or add it again (nothing was written to the destination)")
        os.link(tmp, final)  # never replaces a file that appeared meanwhile
    except FileNotFoundError as e:
        raise WorkspaceError(f"{origin}: the image file is missing; nothing was written to the destination") from e
    except FileExistsError:
        if _sha_or_none(final) != sha:
            raise WorkspaceError(f"{final}: appeared with other content while copying; not overwritten") from None
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)
    return False


def _sha_or_none(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except ImageError:
        return None


def _check_hashes(plan: _ImagePlan) -> None:
    """Every file the destination will read holds the content its row names (4 threads: hashing releases the
    GIL and overlaps reads)."""
    items = list(plan.files.values())
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda item: _sha_or_none(item[0]), items))
    bad = [(path, "missing or unreadable" if g is None else "content differs") for (path, sha), g in zip(items, got)
           if g != sha]
    if bad:
        path, why = bad[0]
        raise ImageError(f"{path}: {why} ({len(bad)} of {len(items)} images fail their content-hash check); restore "
                         "them, or pass --no-image-check to copy the rows anyway (nothing was written)")


def _verify(src_db: Any, db: Any, report: CopyReport, plan: _ImagePlan, check_images: bool) -> None:
    """Counts per table in the source's snapshot, as written, and as the destination holds them; every image
    row of the destination names a file that was hash-checked with that very hash."""
    for table, written in report.tables.items():
        want, have = _count(src_db, table), _count(db, table)
        if not want == written == have:
            raise WorkspaceError(f"{report.destination}: table {table!r} has {have} rows after the copy, the source "
                                 f"{want} ({written} written); nothing was written")
    if check_images:
        files = {p: s for p, (_f, s) in plan.files.items()}
        for path, sha in db.execute("SELECT path, sha256 FROM images").fetchall():
            if files.get(path) != sha:
                raise WorkspaceError(f"{report.destination}: image row {path!r} names no verified file; nothing "
                                     "was written")


# --- small helpers -----------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(Path(folder) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))

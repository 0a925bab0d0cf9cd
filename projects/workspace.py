"""The workspace: one folder holding `labeler.sqlite` (or one PostgreSQL database, a team workspace), the
source of truth for everything.

Every public method that writes does so in exactly one transaction (`db.atomic()`), so a crash at
any moment leaves the last committed edit on disk and nothing half-written. Connections run in
autocommit mode with WAL journaling: readers (the GUI) never block the writer (the inference
worker) and a killed process loses nothing it committed. Each thread opens its own Workspace.

`Workspace` is a facade: each concern of the store lives in its own module under `projects/store/`
(see its package docstring); this module opens, creates and migrates.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from projects.connection import connect, identify
from projects.errors import WorkspaceError
from projects.schema import APP_ID, MIGRATIONS, SCHEMA_VERSION
from projects.store.annotations import AnnotationStore
from projects.store.common import check_box, check_name_encodable, default_author, now
from projects.store.images import AddImagesResult, ImageStore
from projects.store.leases import LeaseStore
from projects.store.models import ModelStore
from projects.store.pg_schema import PG_MIGRATIONS
from projects.store.review import ReviewStore
from projects.store.stats import StatsStore
from projects.store.target import is_url, normalize, redact
from projects.store.taxonomy import TaxonomyStore
from projects.store.transfer import TransferStore
from projects.taxonomy import SuperTaxonomy, default_super_taxonomy

__all__ = ["DB_NAME", "AddImagesResult", "Workspace", "WorkspaceError", "check_name_encodable", "default_author",
           "now"]

DB_NAME = "labeler.sqlite"
IMAGE_ROOT_ENV = "LABELER_IMAGE_ROOT"  # where this machine mounts a team workspace's image root
_check_box = check_box  # the name it had before the split


class Workspace(TaxonomyStore, ImageStore, AnnotationStore, ModelStore, ReviewStore, TransferStore, StatsStore,
                LeaseStore):
    """A workspace in a folder (SQLite) or a team workspace in a PostgreSQL database.

    `folder` is where files live: the workspace folder, or a team workspace's image root on shared storage
    (image and model paths are stored relative to it). `location` is what `Workspace.open` takes to open
    the same workspace again (the folder, or the URL) — a worker thread or process uses it.
    """

    def __init__(self, folder: Path, db: Any, location: str | None = None):
        self.folder = folder
        self.db = db
        self.location = location or str(folder)

    @property
    def name(self) -> str:
        """A short name for titles: the folder's name, or a team workspace's database name."""
        if self.is_team:
            return self.location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "team workspace"
        return self.folder.name

    @property
    def is_team(self) -> bool:
        """A PostgreSQL workspace: images must lie under the image root, which every annotator reaches."""
        return self.db.dialect == "postgresql"

    # --- opening ---------------------------------------------------------------------------
    @staticmethod
    def db_path(folder: str | Path) -> Path:
        p = Path(folder)
        return p if p.suffix == ".sqlite" else p / DB_NAME

    @classmethod
    def create(cls, folder: str | Path, super_taxonomy: SuperTaxonomy | None = None, *,
               image_root: str | Path | None = None) -> Workspace:
        """A new workspace in `folder`, or in the empty PostgreSQL database a `postgresql://` URL names
        (which needs `image_root`: the shared folder its images and models lie under)."""
        if is_url(folder):
            return cls._create_team(str(normalize(folder)), super_taxonomy or default_super_taxonomy(), image_root)
        if image_root is not None:
            raise WorkspaceError(f"{folder}: an image root is for a PostgreSQL workspace; a folder workspace "
                                 "stores image paths relative to itself")
        folder = Path(folder)
        path = cls.db_path(folder)
        if path.exists():
            raise WorkspaceError(f"{path}: a workspace already exists here" if path.is_file() and _is_sqlite(path)
                                 else f"{path}: already exists and is not a workspace; choose another folder")
        for parent in (path.parent, *path.parent.parents):
            if parent.exists() and not parent.is_dir():
                raise WorkspaceError(f"{parent}: is a file, not a folder; a workspace is a folder")
        sup = super_taxonomy or default_super_taxonomy()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WorkspaceError(f"{path.parent}: cannot create the workspace folder ({e.strerror or e})") from e
        ws = cls(path.parent.resolve(), connect(path))
        try:
            ws._migrate(0)
            with ws.db.atomic():
                ws.db["meta"].upsert({"key": "super_taxonomy_name", "value": sup.name}, pk="key")
                ws._insert_nodes(sup.nodes)
        except BaseException:
            ws.close()
            path.unlink(missing_ok=True)
            raise
        return ws

    @classmethod
    def _create_team(cls, url: str, sup: SuperTaxonomy, image_root: str | Path | None) -> Workspace:
        from projects.store import postgres

        shown = redact(url)
        if image_root is None:
            raise WorkspaceError(f"{shown}: a PostgreSQL workspace needs an image root (--image-root DIR): the "
                                 "shared folder every annotator reaches, which its images lie under")
        root = Path(image_root).expanduser().resolve()
        if not root.is_dir():
            raise WorkspaceError(f"{image_root}: the image root is not a folder (create it on shared storage first)")
        db = postgres.connect(url)
        try:
            if db.execute("SELECT to_regclass('meta')").fetchone()[0] is not None:
                postgres.identify(db, APP_ID)  # not ours: says so
                raise WorkspaceError(f"{shown}: a workspace already exists here")
            if tables := db.table_names():
                raise WorkspaceError(f"{shown}: the database already holds {len(tables)} tables; a team workspace "
                                     "needs an empty database (CREATE DATABASE ...)")
            ws = cls(root, db, url)
            with db.atomic():  # one transaction, DDL included: a failed create leaves the database empty
                ws._migrate(0)
                db["meta"].upsert({"key": "super_taxonomy_name", "value": sup.name}, pk="key")
                db["meta"].upsert({"key": "image_root", "value": str(root)}, pk="key")
                ws._insert_nodes(sup.nodes)
        except BaseException:
            db.close()
            raise
        return ws

    @classmethod
    def open(cls, folder: str | Path) -> Workspace:
        if is_url(folder):
            return cls._open_team(str(normalize(folder)))
        path = cls.db_path(folder)
        if not path.is_file():
            raise WorkspaceError(f"{folder}: not a workspace (no {DB_NAME}); create one with `labeler init`")
        version = identify(path, APP_ID)  # read-only: a foreign or damaged file is refused untouched
        if version > SCHEMA_VERSION:
            raise WorkspaceError(f"{path}: schema version {version} is newer than this Labeler "
                                 f"understands ({SCHEMA_VERSION}); upgrade Labeler")
        ws = cls(path.parent.resolve(), connect(path))
        ws._migrate(ws.schema_version)
        return ws

    @classmethod
    def _open_team(cls, url: str) -> Workspace:
        from projects.store import postgres

        db = postgres.connect(url)
        try:
            version = postgres.identify(db, APP_ID)
            if version > SCHEMA_VERSION:
                raise WorkspaceError(f"{redact(url)}: schema version {version} is newer than this Labeler "
                                     f"understands ({SCHEMA_VERSION}); upgrade Labeler")
            row = db.execute("SELECT value FROM meta WHERE key = 'image_root'").fetchone()
            root = os.environ.get(IMAGE_ROOT_ENV) or (row[0] if row else None)
            if not root:
                raise WorkspaceError(f"{redact(url)}: the workspace names no image root; set {IMAGE_ROOT_ENV}")
            ws = cls(Path(root), db, url)
            ws._migrate(version)
        except BaseException:
            db.close()
            raise
        return ws

    def _migrate(self, current: int) -> None:
        """Apply the forward migrations after `current`, each in its own transaction with its version; a
        version another process applied meanwhile is skipped (read again under the write lock)."""
        migrations = MIGRATIONS if self.db.dialect == "sqlite" else PG_MIGRATIONS
        for version in range(current, SCHEMA_VERSION):
            with self.db.atomic():
                if self.db.schema_version() > version:
                    continue
                migrations[version](self.db)
                self.db.set_schema_version(version + 1)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return self.db.schema_version()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """Group several writes into one transaction (nested calls become savepoints)."""
        with self.db.atomic() as db:
            yield db


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"

"""The workspace: one folder holding `labeler.sqlite`, the source of truth for everything.

Every public method that writes does so in exactly one transaction (`db.atomic()`), so a crash at
any moment leaves the last committed edit on disk and nothing half-written. Connections run in
autocommit mode with WAL journaling: readers (the GUI) never block the writer (the inference
worker) and a killed process loses nothing it committed. Each thread opens its own Workspace.

`Workspace` is a facade: each concern of the store lives in its own module under `projects/store/`
(see its package docstring); this module opens, creates and migrates.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from projects.connection import connect, identify
from projects.errors import WorkspaceError
from projects.schema import APP_ID, MIGRATIONS, SCHEMA_VERSION
from projects.store.annotations import AnnotationStore
from projects.store.common import check_box, check_name_encodable, default_author, now
from projects.store.images import AddImagesResult, ImageStore
from projects.store.models import ModelStore
from projects.store.review import ReviewStore
from projects.store.stats import StatsStore
from projects.store.taxonomy import TaxonomyStore
from projects.store.transfer import TransferStore
from projects.taxonomy import SuperTaxonomy, default_super_taxonomy

__all__ = ["DB_NAME", "AddImagesResult", "Workspace", "WorkspaceError", "check_name_encodable", "default_author",
           "now"]

DB_NAME = "labeler.sqlite"
_check_box = check_box  # the name it had before the split


class Workspace(TaxonomyStore, ImageStore, AnnotationStore, ModelStore, ReviewStore, TransferStore, StatsStore):
    def __init__(self, folder: Path, db: Database):
        self.folder = folder
        self.db = db

    # --- opening ---------------------------------------------------------------------------
    @staticmethod
    def db_path(folder: str | Path) -> Path:
        p = Path(folder)
        return p if p.suffix == ".sqlite" else p / DB_NAME

    @classmethod
    def create(cls, folder: str | Path, super_taxonomy: SuperTaxonomy | None = None) -> Workspace:
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
    def open(cls, folder: str | Path) -> Workspace:
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

    def _migrate(self, current: int) -> None:
        for version in range(current, SCHEMA_VERSION):
            with self.db.atomic():
                MIGRATIONS[version](self.db)
                self.db.execute(f"PRAGMA user_version = {version + 1}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Group several writes into one transaction (nested calls become savepoints)."""
        with self.db.atomic() as db:
            yield db



def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from projects.workspace import Workspace


@pytest.fixture
def ws(tmp_path):
    w = Workspace.create(tmp_path / "ws")
    yield w
    w.close()


@pytest.fixture(scope="session")
def demo_ws(tmp_path_factory):
    """A small demo workspace (read-only use: copy it before editing)."""
    from projects.demo import build_demo

    folder = tmp_path_factory.mktemp("demo") / "ws"
    build_demo(folder, n_images=24, seed=1).close()
    return folder


# --- the store on both backends: a throwaway PostgreSQL server (tests/pg_server.py) -------------------------
@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the whole session, stopped at its end. Skips without the binaries, unless
    LABELER_REQUIRE_POSTGRES=1 (CI), where a missing server fails instead."""
    from pg_server import REQUIRE_ENV, PgServer, Unavailable

    try:
        server = PgServer().start()
    except Unavailable as e:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{e} ({REQUIRE_ENV}=1)")
        pytest.skip(str(e))
    try:
        yield server
    finally:
        server.stop()


class StoreTarget:
    """Where a test's workspace lives on one backend: `create()` a workspace, `target` to open it again.
    On PostgreSQL each test gets a fresh database and the image root is a temporary folder."""

    def __init__(self, kind: str, tmp_path: Path, server=None):
        self.kind, self.tmp_path, self.server = kind, tmp_path, server
        self.image_root = tmp_path / "ws" if kind == "sqlite" else tmp_path / "image-root"
        self.target = str(tmp_path / "ws") if kind == "sqlite" else server.create_database()

    def create(self, super_taxonomy=None) -> Workspace:
        if self.kind == "sqlite":
            return Workspace.create(self.target, super_taxonomy)
        self.image_root.mkdir(exist_ok=True)
        return Workspace.create(self.target, super_taxonomy, image_root=self.image_root)

    def open(self) -> Workspace:
        return Workspace.open(self.target)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """The backend a parametrised store test runs on."""
    server = request.getfixturevalue("pg_server") if request.param == "postgres" else None
    target = StoreTarget(request.param, tmp_path, server)
    yield target
    if server is not None:
        server.drop_database(target.target)

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

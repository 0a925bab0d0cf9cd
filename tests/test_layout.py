"""The rules of the house: Qt-free core, one-way imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QT_ADAPTERS = {"inference/qt_worker.py"}  # the one thin module allowed to adapt inference to Qt


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package,forbidden", [
    ("projects", {"PySide6", "labeler", "widgets", "inference"}),
    ("inference", {"PySide6", "labeler", "widgets"}),
    ("widgets", {"labeler", "sqlite3", "sqlite_utils"}),
])
def test_imports_run_one_way(package, forbidden):
    files = list((ROOT / package).rglob("*.py"))
    assert files
    for f in files:
        rel = f.relative_to(ROOT).as_posix()
        bad = imports_of(f) & (forbidden - ({"PySide6"} if rel in QT_ADAPTERS else set()))
        assert not bad, f"{rel} imports {sorted(bad)}"

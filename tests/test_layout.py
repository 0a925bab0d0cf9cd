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


def test_one_value_type_per_concept():
    """A box, a detection and an annotation row are defined once, Qt-free, in projects/values.py."""
    import re

    from inference.lint_types import Annotated
    from inference.predictor import Detection
    from inference.worker import Result
    from projects import values
    from widgets.annotation_list import AnnotationRow

    assert Detection is values.Detection and Annotated is values.AnnotationRow and AnnotationRow is values.AnnotationRow
    assert Result.__annotations__["detections"] == "list[Detection]"
    alias = re.compile(r"^Box\s*=", re.MULTILINE)
    packages = ("projects", "inference", "widgets", "labeler", "bench")
    defined = sorted(f.relative_to(ROOT).as_posix() for package in packages
                     for f in (ROOT / package).rglob("*.py") if alias.search(f.read_text()))
    assert defined == ["projects/values.py"]
    assert imports_of(ROOT / "projects" / "values.py") <= {"__future__", "collections", "dataclasses", "math", "typing"}

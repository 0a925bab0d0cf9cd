"""Fuzzing: every reader, fed random, truncated and mutated input, raises only the project's clean error.

A crash (KeyError, TypeError, IndexError, RecursionError...) would be a bug: the user must get a message
naming the file and the place. The number of examples is bounded to keep the suite fast.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_formats_support import TAXONOMY, make_source

from projects.formats import ImportOptions, TransferError, export_project, get_format, import_annotations
from projects.formats.registry import ReadContext
from projects.workspace import Workspace

# LABELER_FUZZ_EXAMPLES=2000 for a longer hunt; 40 keeps the suite fast.
FUZZ = settings(max_examples=int(os.environ.get("LABELER_FUZZ_EXAMPLES", 40)), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# The file each format's reader is pointed at, inside its export folder.
TARGET = {"coco": "annotations.json", "voc": "Annotations/{stem}.xml", "cvat": "annotations.xml",
          "labelstudio": "result.json", "labelme": "{stem}.json", "yolo": "labels/{split}/{stem}.txt",
          "archive": ""}
JSON_FORMATS = ("coco", "labelstudio", "labelme")


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """One valid export per format, and the bytes of the file the fuzzer will damage."""
    root = tmp_path_factory.mktemp("fuzz")
    ws = make_source(root / "src")
    out = {}
    for fmt in TARGET:
        dest = root / (f"{fmt}.zip" if fmt == "archive" else fmt)
        export_project(ws, "P", fmt, dest)
        if fmt == "archive":
            out[fmt] = (dest, dest)
            continue
        pattern = TARGET[fmt]
        if "{" in pattern:
            glob = pattern.replace("{stem}", "*").replace("{split}", "*")
            target = sorted(p for p in dest.glob(glob) if p.stat().st_size > 30)[0]
        else:
            target = dest / pattern
        out[fmt] = (dest, target)
    ws.close()
    return out


def _read(fmt: str, folder: Path, scratch: Path) -> None:
    try:
        get_format(fmt).read(folder, ReadContext(scratch=scratch))
    except TransferError as e:
        assert str(e).strip()  # a message, naming the file
        assert str(folder) in str(e) or str(folder.parent) in str(e)


def _damaged_copy(samples, fmt: str, data: bytes) -> tuple[Path, Path]:
    src, target = samples[fmt]
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-"))
    if fmt == "archive":
        path = tmp / "a.zip"
        path.write_bytes(data)
        return path, tmp
    copy = tmp / "data"
    shutil.copytree(src, copy)
    (copy / target.relative_to(src)).write_bytes(data)
    return copy, tmp


@pytest.mark.parametrize("fmt", sorted(TARGET))
@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes(samples, fmt, data):
    path, tmp = _damaged_copy(samples, fmt, data)
    try:
        _read(fmt, path, tmp / "scratch")
    finally:
        shutil.rmtree(tmp)


@pytest.mark.parametrize("fmt", sorted(TARGET))
@FUZZ
@given(cut=st.floats(0, 1), junk=st.binary(max_size=8))
def test_truncated_files(samples, fmt, cut, junk):
    valid = samples[fmt][1].read_bytes()
    path, tmp = _damaged_copy(samples, fmt, valid[: int(len(valid) * cut)] + junk)
    try:
        _read(fmt, path, tmp / "scratch")
    finally:
        shutil.rmtree(tmp)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                                                     max_size=3), max_leaves=8)


def _mutate(doc, draw, depth: int = 0):
    """Replace one randomly chosen part of a JSON document with a random value."""
    if depth > 6 or not isinstance(doc, dict | list) or not doc or draw(st.integers(0, 3)) == 0:
        return draw(JSON_VALUES)
    if isinstance(doc, dict):
        key = draw(st.sampled_from(sorted(doc)))
        return {**doc, key: _mutate(doc[key], draw, depth + 1)}
    i = draw(st.integers(0, len(doc) - 1))
    return [*doc[:i], _mutate(doc[i], draw, depth + 1), *doc[i + 1:]]


@pytest.fixture(scope="module")
def fuzz_ws(tmp_path_factory):
    ws = Workspace.create(tmp_path_factory.mktemp("fuzzws") / "ws")
    ws.add_project("Q", TAXONOMY)
    yield ws
    ws.close()


@pytest.mark.parametrize("fmt", JSON_FORMATS)
@FUZZ
@given(data=st.data())
def test_mutated_json_through_the_whole_import(samples, fuzz_ws, fmt, data):
    """Structurally valid JSON with one part replaced: the full import (dry run) fails cleanly or succeeds."""
    valid = json.loads(samples[fmt][1].read_text())
    doc = _mutate(valid, data.draw)
    path, tmp = _damaged_copy(samples, fmt, json.dumps(doc).encode())
    try:
        import_annotations(fuzz_ws, "Q", fmt, path, ImportOptions(dry_run=True, skip_missing=data.draw(st.booleans())))
    except TransferError as e:
        assert str(e).strip()
    finally:
        shutil.rmtree(tmp)


@FUZZ
@given(data=st.data())
def test_mutated_archive_manifest(samples, fuzz_ws, data):
    archive = samples["archive"][0]
    with zipfile.ZipFile(archive) as z:
        entries = {i.filename: z.read(i) for i in z.infolist()}
    doc = _mutate(json.loads(entries["manifest.json"]), data.draw)
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        with zipfile.ZipFile(tmp / "a.zip", "w") as z:
            for name, raw in entries.items():
                z.writestr(name, json.dumps(doc) if name == "manifest.json" else raw)
        import_annotations(fuzz_ws, "Fuzzed", "archive", tmp / "a.zip", ImportOptions(dry_run=True))
    except TransferError as e:
        assert str(e).strip()
    finally:
        shutil.rmtree(tmp)


@FUZZ
@given(text=st.text(max_size=300) | st.sampled_from(["names: {0: a, 2: b}", "names: [a]\nnc: 3", "train: /etc",
                                                      "names: [a]\ntrain: ../../x", "names: !!python/name:os.system",
                                                      "names: [a]\ntrain: [1, 2]", "names:\n  x: a"]))
def test_random_data_yaml(samples, text):
    src, _ = samples["yolo"]
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        copy = tmp / "data"
        shutil.copytree(src, copy)
        (copy / "data.yaml").write_text(text, encoding="utf-8")
        _read("yolo", copy, tmp / "scratch")
    finally:
        shutil.rmtree(tmp)

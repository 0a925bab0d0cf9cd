"""Issue 10, items 3 and 4: a checkpoint is verified in full before it is registered, identified by path and
content, used when it is named, and a workspace keeps its models when it is copied or moved.

Every checkpoint here is a real (tiny, untrained) one: tf_efficientdet_lite0 at 128 px, saved once per module
and copied per test.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, save_file

from inference.architectures import Group, build_detector
from inference.checkpoint import save_checkpoint
from labeler.cli import main
from projects.imaging import write_image
from projects.schema import MIGRATIONS
from projects.synthetic import make_scene
from projects.taxonomy import default_super_taxonomy
from projects.workspace import Workspace


def _meta(sup) -> dict:
    return {"model": "tf_efficientdet_lite0", "image_size": 128, "layout": "single",
            "groups": [Group("all", tuple(sup.names)).to_dict()], "super_taxonomy": sup.to_dict(),
            "approach": "tlm", "normalisation": {"mean": [127.5] * 3, "std": [127.5] * 3}, "data": {}, "metrics": {}}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Two different tiny checkpoints, A and B."""
    root = tmp_path_factory.mktemp("ckpts")
    sup = default_super_taxonomy()
    for name, seed in (("A", 0), ("B", 1)):
        torch.manual_seed(seed)
        model = build_detector("single", "tf_efficientdet_lite0", [Group("all", tuple(sup.names))], 128)
        save_checkpoint(root / name, model, {**_meta(sup), "version": f"model-{name}"})
    return root


@pytest.fixture
def ckpt(saved, tmp_path):
    def copy(name: str = "A", to: Path | None = None) -> Path:
        target = to or tmp_path / f"ckpt-{name}"
        shutil.copytree(saved / name, target)
        return target
    return copy


@pytest.fixture
def wsdir(tmp_path) -> Path:
    folder = tmp_path / "ws"
    with Workspace.create(folder) as ws:
        ws.add_project("P")
        (folder / "imgs").mkdir()
        for i in range(2):
            write_image(folder / "imgs" / f"{i}.png", make_scene(i, size=(96, 64)).image)
        ws.add_images("P", [folder / "imgs"])
    return folder


def _edit(folder: Path, change) -> None:
    meta = json.loads((folder / "model.json").read_text())
    change(meta)
    (folder / "model.json").write_text(json.dumps(meta))


def _rehash(folder: Path) -> None:
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    _edit(folder, lambda m: m["weights"].update(sha256=sha))


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(err: str) -> str:
    """The one `labeler: error:` line of stderr (a progress bar may come before it), never a traceback."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "img/s]" not in line]
    assert len(lines) == 1 and lines[0].startswith("labeler: error: ") and "Traceback" not in err, err
    return lines[0]


def _models(folder: Path, include_removed: bool = True) -> list[dict]:
    with Workspace.open(folder) as ws:
        return ws.models(include_removed=include_removed)


# --- item 3: refused checkpoints are never registered ------------------------------------------------
def _pickled(folder: Path) -> None:
    state = load((folder / "model.safetensors").read_bytes())
    torch.save(state, folder / "model.safetensors")  # a pickle, not safetensors
    _rehash(folder)


def _mismatched(folder: Path) -> None:
    state = load((folder / "model.safetensors").read_bytes())
    state.pop(sorted(state)[-1])
    save_file(state, str(folder / "model.safetensors"))
    _rehash(folder)


def _permuted(folder: Path) -> None:  # vehicle and person swapped: every vehicle box would be named person
    def swap(meta):
        nodes = meta["groups"][0]["nodes"]
        a, b = nodes.index("vehicle"), nodes.index("person")
        nodes[a], nodes[b] = nodes[b], nodes[a]
    _edit(folder, swap)


def _weights_outside(folder: Path) -> None:  # a valid weights file, but outside the checkpoint folder
    shutil.copy(folder / "model.safetensors", folder.parent / "elsewhere.safetensors")
    _edit(folder, lambda m: m["weights"].update(file="../elsewhere.safetensors"))


def _weights_absolute(folder: Path) -> None:
    shutil.copy(folder / "model.safetensors", folder.parent / "elsewhere.safetensors")
    _edit(folder, lambda m: m["weights"].update(file=str(folder.parent / "elsewhere.safetensors")))


def _weights_symlink_out(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder.parent / "elsewhere.safetensors")
    (folder / "model.safetensors").symlink_to(folder.parent / "elsewhere.safetensors")


def _json_symlink_out(folder: Path) -> None:
    (folder / "model.json").rename(folder.parent / "elsewhere.json")
    (folder / "model.json").symlink_to(folder.parent / "elsewhere.json")


CASES = {
    "corrupt weights": (lambda f: (f / "model.safetensors").write_bytes(b"\0" * 100), "model.safetensors: corrupt"),
    "pickled weights": (_pickled, "model.safetensors: not a readable safetensors"),
    "weights that do not fit": (_mismatched, "do not fit the model"),
    "groups permuted": (_permuted, "out of super-taxonomy order"),
    "weights path with ..": (_weights_outside, "outside the checkpoint folder"),
    "absolute weights path": (_weights_absolute, "outside the checkpoint folder"),
    "weights a symlink leading out": (_weights_symlink_out, "leads outside the checkpoint folder"),
    "model.json a symlink leading out": (_json_symlink_out, "leads outside the checkpoint folder"),
    "format_version not a number": (lambda f: _edit(f, lambda m: m.update(format_version="x")),
                                    "model.json: format_version must be an integer"),
    "image_size not a number": (lambda f: _edit(f, lambda m: m.update(image_size="big")),
                                "model.json: image_size must be an integer"),
    "normalisation not numbers": (lambda f: _edit(f, lambda m: m.update(normalisation={"mean": ["a"] * 3})),
                                  "model.json: normalisation must hold"),
    "group names an unknown node": (lambda f: _edit(f, lambda m: m["groups"][0]["nodes"].append("dragon")),
                                    "not a node of the checkpoint's super-taxonomy"),
    "no weights hash": (lambda f: _edit(f, lambda m: m["weights"].pop("sha256")), "weights.sha256 must be"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_refused_checkpoint_is_never_registered(case, ckpt, wsdir, capsys):
    folder = ckpt()
    spoil, message = CASES[case]
    spoil(folder)
    code, _, err = _run(capsys, "predict", wsdir, "--project", "P", "--model", folder, "--threads", "1")
    assert code == 2 and message in _one_line_error(err)
    assert _models(wsdir) == []
    code, _, err = _run(capsys, "models", "add", wsdir, folder)
    assert code == 2 and message in _one_line_error(err) and _models(wsdir) == []


def test_weights_outside_the_folder_are_never_read(ckpt, wsdir, capsys, tmp_path):
    """`weights.file: ../../secret` must not even be opened (its first line used to reach the message)."""
    folder = ckpt()
    (tmp_path / "secret.txt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    _edit(folder, lambda m: m["weights"].update(file="../secret.txt"))
    code, _, err = _run(capsys, "predict", wsdir, "--project", "P", "--model", folder)
    assert code == 2 and "outside the checkpoint folder" in _one_line_error(err) and "root:x" not in err


def test_a_wrongly_registered_model_is_skipped_and_removable(ckpt, wsdir, capsys):
    """Rows registered unverified by an older Labeler (or whose files broke later) must not stop predict or
    the window's worker: the newest model that loads is used, the broken one is named, and can be removed."""
    good = ckpt("A", wsdir / "models" / "good")
    bad = ckpt("B", wsdir / "models" / "bad")
    (bad / "model.safetensors").write_bytes(b"\0" * 100)
    with Workspace.open(wsdir) as ws:  # as the old `predict --model` did: registered before any check
        good_id = ws.register_model("model-A", good)
        ws.register_model("model-B", bad)
    code, out, err = _run(capsys, "predict", wsdir, "--project", "P", "--threads", "1")
    assert code == 0, err
    assert "predicted 2 images with model-A" in out
    with Workspace.open(wsdir) as ws:
        assert all(ws.predictions(i, good_id) is not None for i in ws.image_ids("P"))
    code, out, _ = _run(capsys, "models", "list", wsdir)
    assert code == 0 and "model-B (latest)" in out
    code, out, err = _run(capsys, "models", "remove", wsdir, "model-B")
    assert code == 0, err
    assert "removed model model-B" in out and str(bad) in out
    assert [m["version"] for m in _models(wsdir)] == ["model-A"]
    assert bad.is_dir()  # the folder is the user's: left on disk


def test_predict_with_model_uses_that_model_not_the_latest(ckpt, wsdir, capsys):
    a, b = ckpt("A"), ckpt("B")
    assert _run(capsys, "models", "add", wsdir, a)[0] == 0
    assert _run(capsys, "models", "add", wsdir, b)[0] == 0  # B is now the latest
    code, out, err = _run(capsys, "predict", wsdir, "--project", "P", "--model", a, "--threads", "1")
    assert code == 0, err
    assert "with model-A" in out
    with Workspace.open(wsdir) as ws:
        ids = ws.image_ids("P")
        a_id, b_id = ws.model("model-A")["id"], ws.model("model-B")["id"]
        assert all(ws.predictions(i, a_id) is not None for i in ids)
        assert all(ws.predictions(i, b_id) is None for i in ids)


def test_a_tampered_copy_with_the_same_version_is_refused(ckpt, wsdir, capsys, tmp_path):
    original = ckpt("A")
    assert _run(capsys, "models", "add", wsdir, original)[0] == 0
    # a copy whose weights were replaced (hash updated to match) but whose version was kept
    copy = ckpt("A", tmp_path / "copy")
    shutil.copy(ckpt("B", tmp_path / "b") / "model.safetensors", copy / "model.safetensors")
    _rehash(copy)
    code, _, err = _run(capsys, "predict", wsdir, "--project", "P", "--model", copy)
    assert code == 2
    assert "model version 'model-A' is already registered from" in _one_line_error(err) and str(original) in err
    assert len(_models(wsdir)) == 1
    # the same content in another folder is the same model: accepted, no second row, its cache reused
    same = ckpt("A", tmp_path / "same")
    code, out, err = _run(capsys, "models", "add", wsdir, same)
    assert code == 0 and "already registered" in out and len(_models(wsdir)) == 1


def test_a_registered_model_changed_on_disk_is_refused_when_loaded(ckpt, wsdir, capsys):
    folder = ckpt("A", wsdir / "models" / "a")
    assert _run(capsys, "models", "add", wsdir, folder)[0] == 0
    _edit(folder, lambda m: m["metrics"].update(note="edited"))  # still a valid checkpoint, other content
    code, _, err = _run(capsys, "predict", wsdir, "--project", "P", "--threads", "1")
    assert code == 2
    assert "changed since model model-A was registered" in _one_line_error(err)
    code, out, _ = _run(capsys, "models", "list", wsdir, "--json")
    assert code == 0 and json.loads(out)["models"][0]["state"] == "changed"


# --- item 4: model paths relative to the workspace -----------------------------------------------------
def test_a_copied_or_moved_workspace_keeps_its_model(ckpt, wsdir, capsys, tmp_path):
    inside = ckpt("A", wsdir / "models" / "a")
    outside = ckpt("B", tmp_path / "shared-models" / "b")
    assert _run(capsys, "models", "add", wsdir, inside)[0] == 0
    assert _run(capsys, "models", "add", wsdir, outside)[0] == 0
    rows = _models(wsdir)
    assert [r["path"] for r in rows] == ["models/a", str(outside.resolve())]
    moved = tmp_path / "moved-ws"
    shutil.move(wsdir, moved)
    code, out, err = _run(capsys, "predict", moved, "--project", "P", "--model", moved / "models" / "a",
                          "--threads", "1")
    assert code == 0, err
    assert "predicted 2 images with model-A" in out and _models(moved)[0]["path"] == "models/a"


def test_a_missing_model_folder_names_the_model_and_the_path(ckpt, wsdir, capsys, tmp_path):
    folder = ckpt("A", tmp_path / "m")
    assert _run(capsys, "models", "add", wsdir, folder)[0] == 0
    shutil.rmtree(folder)
    code, _, err = _run(capsys, "predict", wsdir, "--project", "P", "--threads", "1")
    assert code == 2
    line = _one_line_error(err)
    assert "model model-A" in line and f"{folder}: checkpoint folder not found" in line
    code, out, _ = _run(capsys, "models", "list", wsdir)
    assert "[missing]" in out and f"{folder}: folder not found" in out
    # the same checkpoint found elsewhere: the row follows it
    again = ckpt("A", tmp_path / "found-again")
    code, out, err = _run(capsys, "predict", wsdir, "--project", "P", "--model", again, "--threads", "1")
    assert code == 0, err
    assert "now registered from" in out and _models(wsdir)[0]["path"] == str(again.resolve())


def test_migration_makes_model_paths_inside_the_workspace_relative(tmp_path):
    from sqlite_utils import Database

    folder = tmp_path / "old"
    folder.mkdir()
    db = Database(folder / "labeler.sqlite")
    for migrate in MIGRATIONS[:2]:
        migrate(db)
    db.execute("PRAGMA user_version = 2")
    db["models"].insert_all([
        {"version": "in", "path": str(folder.resolve() / "models" / "v1"), "created_at": "2024"},
        {"version": "out", "path": str(tmp_path / "elsewhere" / "v2"), "created_at": "2024"}])
    db.close()
    with Workspace.open(folder) as ws:
        rows = ws.models()
        assert [r["path"] for r in rows] == ["models/v1", str(tmp_path / "elsewhere" / "v2")]
        assert [r["sha256"] for r in rows] == [None, None] and ws.model_path(rows[0]) == folder.resolve() / "models/v1"


# --- models remove keeps provenance -----------------------------------------------------------------
def test_models_remove_keeps_annotations_and_their_provenance(ckpt, wsdir, capsys):
    folder = ckpt("A")
    assert _run(capsys, "predict", wsdir, "--project", "P", "--model", folder, "--threads", "1")[0] == 0
    with Workspace.open(wsdir) as ws:
        mid = ws.model("model-A")["id"]
        image = ws.image_ids("P")[0]
        label = ws.add_label("P", "Car", "car")
        ann = ws.add_annotation(image, label, (1, 2, 10, 12), provenance="prelabel_accepted", model_id=mid)
    code, out, err = _run(capsys, "models", "remove", wsdir, "model-A")
    assert code == 0, err
    assert "on 2 images" in out and "kept: 1 annotations made from its pre-labels" in out
    with Workspace.open(wsdir) as ws:
        assert ws.annotation(ann)["model_id"] == mid  # provenance intact
        assert ws.predictions(image, mid) is None  # its cache is gone
        assert ws.latest_model() is None and ws.models(include_removed=True)[0]["removed_at"]
        _, rows = ws.project_export_rows("P")
        assert [r[8] for r in rows] == ["model-A"]  # exports still name the version
    code, _, err = _run(capsys, "models", "remove", wsdir, "model-A")
    assert code == 2 and "no registered model version 'model-A'" in _one_line_error(err)
    code, out, err = _run(capsys, "predict", wsdir, "--project", "P")
    assert code == 2 and "no model registered" in err
    # registering it again brings back the same row (annotations still point at it)
    assert _run(capsys, "models", "add", wsdir, folder)[0] == 0
    assert [m["id"] for m in _models(wsdir, include_removed=False)] == [mid]


def test_models_list_json(ckpt, wsdir, capsys):
    assert _run(capsys, "models", "list", wsdir)[1].startswith("no model registered")
    folder = ckpt("A", wsdir / "models" / "a")
    assert _run(capsys, "models", "add", wsdir, folder)[0] == 0
    code, out, _ = _run(capsys, "models", "list", wsdir, "--json", "--verify")
    (m,) = json.loads(out)["models"]
    assert code == 0 and m["version"] == "model-A" and m["state"] == "ok" and m["latest"]
    assert m["stored_path"] == "models/a" and m["sha256"] == hashlib.sha256(
        (folder / "model.json").read_bytes()).hexdigest()


# --- eval: no tracebacks -------------------------------------------------------------------------------
def test_eval_with_a_broken_checkpoint_is_one_line(ckpt, wsdir, capsys):
    folder = ckpt()
    _edit(folder, lambda m: m.update(normalisation={"mean": ["a"] * 3, "std": [1, 1, 1]}))
    code, _, err = _run(capsys, "eval", wsdir, "--model", folder)
    assert code == 2 and "model.json: normalisation must hold" in _one_line_error(err)
    _edit(folder, lambda m: m.update(format_version="one"))
    code, _, err = _run(capsys, "eval", wsdir, "--model", folder)
    assert code == 2 and "format_version must be an integer" in _one_line_error(err)


def test_the_demo_model_is_registered_relative_to_the_workspace(tmp_path):
    from labeler.commands.demo import DEMO_MODEL, install_demo_model

    if not (DEMO_MODEL / "model.json").exists():
        pytest.skip("no shipped demo model")
    with Workspace.create(tmp_path / "ws") as ws:
        version = install_demo_model(ws)
        row = ws.model(version)
        assert row["path"] == "models/demo" and len(row["sha256"]) == 64


def test_eval_with_malformed_ground_truth_is_one_line(ckpt, wsdir, capsys, tmp_path):
    from projects.split import split_of

    with Workspace.open(wsdir) as ws:
        row = ws.image(ws.image_ids("P")[0])
    split = split_of(int(row["split_bucket"]))
    truth = tmp_path / "truth.json"
    for objects, message in (([{"node": "car", "box": ["a", 1, 2, 3]}], "box must be four numbers"),
                             ([{"node": ["car"], "box": [0, 0, 1, 1]}], "unknown node"),
                             (7, "expected a list of objects")):
        truth.write_text(json.dumps({"images": {row["path"]: objects}}))
        code, _, err = _run(capsys, "eval", wsdir, "--model", ckpt(), "--split", split, "--ground-truth", truth)
        assert code == 2 and message in _one_line_error(err) and "truth.json" in err
        shutil.rmtree(tmp_path / "ckpt-A")


def test_the_windows_worker_skips_a_broken_newest_model_and_unloads_a_removed_one(ws, tmp_path):
    """The window's PredictionService, with fake models: v2 (newest) will not load, so v1 serves; once v1
    is removed the service stops using it instead of predicting with a model the user took away."""
    from inference.worker import PredictionService

    class Fake:
        def __init__(self, version):
            self.version = version

        def predict(self, images):
            return [[] for _ in images]

    def loader(path: Path, threads: int):
        if path.name == "v2":
            raise ValueError(f"{path}: corrupt")
        return Fake(path.name)

    ws.add_project("P")
    (ws.folder / "imgs").mkdir()
    write_image(ws.folder / "imgs" / "0.png", make_scene(0, size=(96, 64)).image)
    (image,) = ws.add_images("P", [ws.folder / "imgs"]).added
    ws.register_model("v1", ws.folder / "v1")
    ws.register_model("v2", ws.folder / "v2")
    results, status = [], []
    svc = PredictionService(ws.folder, on_result=results.append, on_status=status.append, loader=loader,
                            threads=1).start()
    try:
        svc.request(image)
        assert svc.wait_idle(30)
        assert results[-1].model_version == "v1" and results[-1].error is None
        assert any(f"model v2 ({ws.folder / 'v2'}) could not be loaded" in s and "skipped" in s for s in status)
        ws.remove_model("v2")
        ws.remove_model("v1")
        svc.request(image)
        assert svc.wait_idle(30)
        assert results[-1].error == "no model" and svc.model_id is None
    finally:
        svc.stop()


def test_lint_with_model_lints_with_that_model(ckpt, wsdir, capsys):
    a, b = ckpt("A"), ckpt("B")
    assert _run(capsys, "models", "add", wsdir, a)[0] == 0
    assert _run(capsys, "models", "add", wsdir, b)[0] == 0  # B is the latest
    with Workspace.open(wsdir) as ws:
        for i in ws.image_ids("P"):
            ws.set_status(i, "in_progress")
    code, out, err = _run(capsys, "lint", wsdir, "--project", "P", "--model", a, "--json", "--threads", "1")
    assert code == 0, err
    assert json.loads(out)["model"] == "model-A"

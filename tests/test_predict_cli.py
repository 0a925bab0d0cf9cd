"""`labeler predict` with a real (tiny, untrained) checkpoint: fills the cache once, per model version."""

from __future__ import annotations

import pytest
from test_model_support import tiny_checkpoint as make_tiny_checkpoint

from labeler.cli import main
from projects.workspace import Workspace


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return make_tiny_checkpoint(tmp_path / "model")


def test_predict_fills_predictions_once(tmp_path, tiny_checkpoint, capsys):
    from projects.demo import build_demo

    build_demo(tmp_path / "ws", n_images=6, seed=2).close()
    assert main(["predict", str(tmp_path / "ws"), "--project", "B", "--model", str(tiny_checkpoint),
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "predicted 2 images" in out
    with Workspace.open(tmp_path / "ws") as ws:
        model = ws.latest_model()
        for image_id in ws.image_ids("B"):
            preds = ws.predictions(image_id, model["id"])
            assert preds is not None
            assert all(p["score"] >= 0.05 and 0 <= p["x1"] <= p["x2"] <= 512 for p in preds)
    assert main(["predict", str(tmp_path / "ws"), "--project", "B"]) == 0
    assert "2 already predicted" in capsys.readouterr().out


def test_predict_without_model_is_a_clear_error(tmp_path, capsys):
    from projects.demo import build_demo

    build_demo(tmp_path / "ws", n_images=3, seed=2).close()
    assert main(["predict", str(tmp_path / "ws"), "--project", "A"]) == 2
    assert "no model registered" in capsys.readouterr().err


def test_predict_with_a_corrupt_model_names_it_and_never_registers_it(tmp_path, tiny_checkpoint, capsys):
    from projects.demo import build_demo

    build_demo(tmp_path / "ws", n_images=3, seed=2).close()
    (tiny_checkpoint / "model.safetensors").write_bytes(b"\x00" * 100)
    code = main(["predict", str(tmp_path / "ws"), "--project", "A", "--model", str(tiny_checkpoint)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{tiny_checkpoint / 'model.safetensors'}: corrupt weights" in err
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.models(include_removed=True) == []  # refused before registering: later sessions are unaffected

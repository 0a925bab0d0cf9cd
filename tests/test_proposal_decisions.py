"""The store's pre-label decisions (schema v6): per image and model version, removed with the model."""

from __future__ import annotations

import pytest

from projects.errors import LabelerError
from projects.imaging import ImageInfo
from projects.workspace import Workspace


@pytest.fixture
def setup(tmp_path):
    ws = Workspace.create(tmp_path / "w")
    ws.add_project("P")
    (img,) = ws.insert_images(ws.project_id("P"), [ImageInfo(tmp_path / "a.jpg", "a" * 64, 64, 48)]).added
    v1, v2 = ws.register_model("v1", tmp_path / "m1"), ws.register_model("v2", tmp_path / "m2")
    yield ws, img, v1, v2
    ws.close()


def test_decisions_are_kept_per_model_version_and_removed_by_id(setup):
    ws, img, v1, v2 = setup
    ids = ws.add_proposal_decisions(img, v1, [("car", (1.5, 2, 30.25, 40)), ("truck", (5, 5, 9, 9))], "rejected")
    assert [(r["node"], r["x1"], r["x2"], r["decision"]) for r in ws.proposal_decisions(img, v1)] == [
        ("car", 1.5, 30.25, "rejected"), ("truck", 5.0, 9.0, "rejected")]
    assert ws.proposal_decisions(img, v2) == []
    ws.remove_proposal_decisions(ids[:1])
    assert [r["node"] for r in ws.proposal_decisions(img, v1)] == ["truck"]


def test_a_bad_decision_or_node_is_one_labeler_error(setup):
    ws, img, v1, _ = setup
    with pytest.raises(LabelerError, match="unknown decision 'maybe'"):
        ws.add_proposal_decisions(img, v1, [("car", (1, 2, 3, 4))], "maybe")
    with pytest.raises(LabelerError, match="unknown super-taxonomy node 'unicorn'"):
        ws.add_proposal_decisions(img, v1, [("unicorn", (1, 2, 3, 4))], "rejected")
    assert ws.proposal_decisions(img, v1) == []  # one transaction: nothing half-written


def test_removing_a_model_removes_its_decisions(setup):
    ws, img, v1, v2 = setup
    ws.add_proposal_decisions(img, v1, [("car", (1, 2, 3, 4))], "accepted")
    ws.add_proposal_decisions(img, v2, [("car", (1, 2, 3, 4))], "rejected")
    ws.remove_model("v1")  # was refused by the foreign key without its decisions going too
    assert ws.model("v1") is None and [r["decision"] for r in ws.proposal_decisions(img, v2)] == ["rejected"]

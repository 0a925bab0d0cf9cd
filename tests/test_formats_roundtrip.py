"""Import -> export -> import gives the same boxes and labels, for every format."""

from __future__ import annotations

import pytest
from test_formats_support import IMAGES, TAXONOMY, assert_same_boxes, boxes_by_content, make_source

from projects.formats import ImportOptions, export_project, format_names, import_annotations
from projects.workspace import Workspace

# Largest coordinate change each format allows by its own conventions.
TOLERANCE = {"coco": 1e-9, "voc": 0.5, "yolo": 1e-6 * 128, "cvat": 0.005, "labelstudio": 1e-9, "labelme": 1e-9,
             "archive": 0.0}


def test_every_format_has_a_round_trip_tolerance():
    assert set(format_names()) == set(TOLERANCE)


@pytest.mark.parametrize("fmt", sorted(TOLERANCE))
def test_round_trip(tmp_path, fmt):
    src = make_source(tmp_path / "src")
    want = boxes_by_content(src, "P")
    out = tmp_path / ("out.zip" if fmt == "archive" else "out")
    rep = export_project(src, "P", fmt, out)
    assert rep.images == len(IMAGES) and rep.boxes == sum(len(b) for *_, b in IMAGES)

    dst = Workspace.create(tmp_path / "dst")
    if fmt != "archive":
        dst.add_project("Q", TAXONOMY)
    got_rep = import_annotations(dst, "Q", fmt, out)
    assert got_rep.boxes_imported == rep.boxes and got_rep.images_added == len(IMAGES)
    got = boxes_by_content(dst, "Q")
    assert_same_boxes(want, got, TOLERANCE[fmt])
    assert not got_rep.counts, got_rep.lines()  # nothing converted, clamped or skipped

    # A second cycle is exact: each format's rounding is already applied.
    out2 = tmp_path / ("out2.zip" if fmt == "archive" else "out2")
    export_project(dst, "Q", fmt, out2)
    again = Workspace.create(tmp_path / "again")
    if fmt != "archive":
        again.add_project("Q", TAXONOMY)
    import_annotations(again, "Q", fmt, out2)
    assert_same_boxes(got, boxes_by_content(again, "Q"), 1e-9 if fmt != "yolo" else 1e-6 * 128)


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_reimport_does_not_duplicate(tmp_path, fmt):
    src = make_source(tmp_path / "src")
    export_project(src, "P", fmt, tmp_path / "out")
    dst = Workspace.create(tmp_path / "dst")
    dst.add_project("Q", TAXONOMY)
    import_annotations(dst, "Q", fmt, tmp_path / "out")
    rep = import_annotations(dst, "Q", fmt, tmp_path / "out")
    assert rep.boxes_imported == 0 and rep.images_existing == len(IMAGES)
    assert rep.counts["boxes already in the project, not duplicated"] == 6


def test_export_uses_label_order_and_only_submitted(tmp_path):
    src = make_source(tmp_path / "src")
    rep = export_project(src, "P", "yolo", tmp_path / "out", only_submitted=True)
    assert rep.images == 3  # the empty image is not submitted
    assert (tmp_path / "out" / "classes.txt").read_text().split() == ["Car", "Human", "Light"]


def test_imported_annotations_have_provenance_imported_and_images_submitted(tmp_path):
    src = make_source(tmp_path / "src")
    export_project(src, "P", "coco", tmp_path / "out")
    dst = Workspace.create(tmp_path / "dst")
    dst.add_project("Q", TAXONOMY)
    import_annotations(dst, "Q", "coco", tmp_path / "out", ImportOptions(status="in_progress"))
    rows = [a for i in dst.image_ids("Q") for a in dst.annotations(i)]
    assert {a["provenance"] for a in rows} == {"imported"}
    assert {dst.image(i)["status"] for i in dst.image_ids("Q")} == {"in_progress"}

"""Bad input: clear errors naming file and place, nothing written; unsafe paths never followed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_formats_support import TAXONOMY, make_source, snapshot

from projects.formats import FormatError, ImportOptions, TransferError, export_project, import_annotations
from projects.imaging import write_image
from projects.workspace import Workspace

BCCD = Path(__file__).resolve().parents[2] / "shared" / "data" / "BCCD" / "BCCD"


@pytest.fixture
def target(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    ws.add_project("T", TAXONOMY)
    yield ws
    ws.close()


def img(path: Path, w: int = 100, h: int = 50) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.full((h, w, 3), 7, dtype=np.uint8))
    return path


def coco(folder: Path, anns: list, images=None, cats=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"images": images or [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 50}],
           "categories": cats or [{"id": 1, "name": "Car"}], "annotations": anns}
    (folder / "annotations.json").write_text(json.dumps(doc))
    return folder / "annotations.json"


@pytest.mark.skipif(not BCCD.is_dir(), reason="shared BCCD data not present")
def test_real_bccd_voc(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    ws.add_project("Blood")
    rep = import_annotations(ws, "Blood", "voc", BCCD, ImportOptions(add_labels=True))
    assert rep.images_added == 364
    assert rep.boxes_imported == 4888 - 2  # SOURCE.md: 4,888 boxes, two of them zero-area
    zero = rep.examples["zero-area boxes, skipped"]
    assert rep.counts["zero-area boxes, skipped"] == 2
    assert any("BloodImage_00338.xml" in z for z in zero) and any("BloodImage_00343.xml" in z for z in zero)
    assert sorted(lab["name"] for lab in ws.labels("Blood")) == ["Platelets", "RBC", "WBC"]
    assert {lab["node"] for lab in ws.labels("Blood")} == {"Platelets", "RBC", "WBC"}  # new top-level nodes
    assert ws.super_taxonomy().parent["RBC"] is None
    per_label = dict(ws.db.execute("SELECT l.name, COUNT(*) FROM annotations a JOIN labels l ON l.id = a.label_id "
                                   "GROUP BY l.name").fetchall())
    assert per_label["WBC"] == 372 and per_label["Platelets"] == 361  # RBC: 4155 less the zero-area ones
    assert per_label["RBC"] == 4155 - 2


def test_malformed_file_names_file_and_line_and_changes_nothing(tmp_path, target):
    ann = tmp_path / "voc" / "Annotations"
    img(tmp_path / "voc" / "JPEGImages" / "a.jpg")
    ann.mkdir(parents=True)
    (ann / "a.xml").write_text("<annotation><filename>a.jpg</filename><object><name>Car</name><bndbox><xmin>1</xmin>"
                               "<ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")
    (ann / "b.xml").write_text("<annotation>\n<filename>b.jpg</filename>\n<object><name>Car</name>\n</annotation>")
    before = snapshot(target, tmp_path / "ws")
    with pytest.raises(FormatError, match=r"b\.xml: line 4 column \d+: not well-formed XML"):
        import_annotations(target, "T", "voc", tmp_path / "voc")
    assert snapshot(target, tmp_path / "ws") == before
    (ann / "b.xml").write_text("<annotation><filename>b.jpg</filename><object><name>Car</name><bndbox><xmin>1</xmin>"
                               "<ymin>x</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")
    with pytest.raises(FormatError, match=r"b\.xml: annotation/object\[1\]/bndbox/ymin: expected a number"):
        import_annotations(target, "T", "voc", tmp_path / "voc")


def test_json_errors_name_the_json_path(tmp_path, target):
    img(tmp_path / "c" / "a.jpg")
    f = coco(tmp_path / "c", [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]},
                              {"id": 2, "image_id": 1, "category_id": 5, "bbox": [1, 2, 3, 4]}])
    with pytest.raises(FormatError, match=r"\$\.annotations\[1\]\.category_id: no category with id 5"):
        import_annotations(target, "T", "coco", f)
    f.write_text('{"images": [], "categories": [],\n "annotations": [,]}')
    with pytest.raises(FormatError, match=r"annotations\.json: line 2 column \d+: not valid JSON"):
        import_annotations(target, "T", "coco", f)


def test_a_failure_while_writing_rolls_everything_back(tmp_path, target, monkeypatch):
    src = make_source(tmp_path / "src")
    export_project(src, "P", "archive", tmp_path / "p.zip")
    before = snapshot(target, tmp_path / "ws")
    original = Workspace.bulk_import

    def crash(self, *a, **k):
        original(self, *a, **k)  # every row written inside the transaction...
        raise RuntimeError("disk on fire")  # ...then the import dies before commit

    monkeypatch.setattr(Workspace, "bulk_import", crash)
    with pytest.raises(RuntimeError, match="disk on fire"):
        import_annotations(target, "New", "archive", tmp_path / "p.zip")
    assert snapshot(target, tmp_path / "ws") == before  # no rows, no project, no copied images, no scratch


def test_unknown_labels_are_listed_then_mapped_dropped_or_added(tmp_path, target):
    img(tmp_path / "c" / "a.jpg")
    f = coco(tmp_path / "c", [{"id": i, "image_id": 1, "category_id": c, "bbox": [1, 2, 3, 4]}
                              for i, c in enumerate([1, 2, 2, 3])],
             cats=[{"id": 1, "name": "car"}, {"id": 2, "name": "pedestrian"}, {"id": 3, "name": "Car"}])
    with pytest.raises(TransferError) as e:
        import_annotations(target, "T", "coco", f)
    msg = str(e.value)
    assert "'car' (1 boxes; did you mean 'Car'?)" in msg and "'pedestrian' (2 boxes)" in msg and "--map" in msg
    rep = import_annotations(target, "T", "coco", f, ImportOptions(mapping={"car": "Car", "pedestrian": None}))
    assert rep.boxes_imported == 2 and rep.counts["boxes dropped by the label mapping"] == 2
    other = Workspace.create(tmp_path / "other")
    other.add_project("T")
    rep = import_annotations(other, "T", "coco", f, ImportOptions(add_labels=True))
    assert rep.labels_added == ["car", "pedestrian", "Car"]
    nodes = {lab["name"]: lab["node"] for lab in other.labels("T")}
    assert nodes == {"car": "car", "pedestrian": "pedestrian", "Car": "Car"}  # existing node reused, others new
    assert other.super_taxonomy().parent["pedestrian"] is None


def test_missing_images_are_listed_or_skipped(tmp_path, target):
    img(tmp_path / "c" / "a.jpg")
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "gone1.jpg"}, {"id": 3, "file_name": "gone2"}]
    f = coco(tmp_path / "c", [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4]},
                              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}], images=images)
    with pytest.raises(TransferError, match=r"2 images .* cannot be found(.|\n)*gone1\.jpg(.|\n)*gone2"):
        import_annotations(target, "T", "coco", f)
    rep = import_annotations(target, "T", "coco", f, ImportOptions(skip_missing=True))
    assert rep.images_added == 1 and rep.boxes_imported == 1
    assert rep.counts["images not found, skipped with their boxes"] == 2


def test_paths_never_leave_their_folder(tmp_path, target):
    secret = img(tmp_path / "outside" / "secret.jpg")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "link.jpg").symlink_to(secret)
    images = [{"id": 1, "file_name": "../outside/secret.jpg"}, {"id": 2, "file_name": str(secret)},
              {"id": 3, "file_name": "link.jpg"}]
    f = coco(tmp_path / "c", [], images=images)
    with pytest.raises(TransferError, match="3 images named in the annotations cannot be found"):
        import_annotations(target, "T", "coco", f)
    assert target.image_ids("T") == []


@pytest.mark.parametrize("doc", [
    '<!DOCTYPE a [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><annotation>&b;</annotation>',
    '<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotation><filename>&x;</filename></annotation>'])
def test_xml_entities_and_dtds_are_refused(tmp_path, target, doc):
    (tmp_path / "a.xml").write_text(doc)
    with pytest.raises(FormatError, match="refused unsafe XML"):
        import_annotations(target, "T", "voc", tmp_path / "a.xml")


@pytest.mark.parametrize("policy,kept,kinds", [
    ("clamp", 3, {"boxes partly outside the image, clamped": 1, "boxes entirely outside the image, skipped": 1}),
    ("skip", 2, {"boxes outside the image, skipped": 2})])
def test_bad_boxes_are_reported_clamped_or_skipped(tmp_path, target, policy, kept, kinds):
    img(tmp_path / "c" / "a.jpg", 100, 50)
    bboxes = [[10, 10, 5, 5], [90, 40, 20, 20], [200, 10, 5, 5], [1, 1, 0, 5], [float("nan"), 1, 2, 2],
              [5, 5, -3, 2], [0, 0, 100, 50]]
    f = coco(tmp_path / "c", [{"id": i, "image_id": 1, "category_id": 1, "bbox": b} for i, b in enumerate(bboxes)],
             cats=[{"id": 1, "name": "Car"}])
    rep = import_annotations(target, "T", "coco", f, ImportOptions(bad_boxes=policy))
    assert rep.boxes_imported == kept
    assert rep.counts["zero-area boxes, skipped"] == 1
    assert rep.counts["boxes with NaN or infinite coordinates, skipped"] == 1
    assert rep.counts["boxes with reversed corners, skipped"] == 1
    for k, n in kinds.items():
        assert rep.counts[k] == n, rep.lines()
    got = sorted((a["x1"], a["y1"], a["x2"], a["y2"]) for i in target.image_ids("T") for a in target.annotations(i))
    assert all(0 <= x1 < x2 <= 100 and 0 <= y1 < y2 <= 50 for x1, y1, x2, y2 in got)
    if policy == "clamp":
        assert (90, 40, 100, 50) in got
    with pytest.raises(TransferError, match=r"invalid boxes(.|\n)*\$\.annotations\[1\]"):
        import_annotations(target, "T", "coco", f, ImportOptions(bad_boxes="error"))


def test_size_mismatch_is_reported_and_real_size_used(tmp_path, target):
    img(tmp_path / "c" / "a.jpg", 100, 50)
    f = coco(tmp_path / "c", [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}],
             images=[{"id": 1, "file_name": "a.jpg", "width": 50, "height": 100}])
    rep = import_annotations(target, "T", "coco", f)
    kind = "images whose real size differs from the size the file states (real size used)"
    assert rep.counts[kind] == 1 and "swapped" in rep.examples[kind][0]
    im = target.image(target.image_ids("T")[0])
    assert (im["width"], im["height"]) == (100, 50)
    # --trust-sizes takes the stated size without decoding (documented: a wrong one goes unnoticed)
    other = Workspace.create(tmp_path / "o")
    other.add_project("T", TAXONOMY)
    import_annotations(other, "T", "coco", f, ImportOptions(trust_sizes=True))
    im = other.image(other.image_ids("T")[0])
    assert (im["width"], im["height"]) == (50, 100) and im["sha256"] == target.image(target.image_ids("T")[0])[
        "sha256"]


def test_export_is_atomic_and_never_clobbers(tmp_path, monkeypatch):
    src = make_source(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(TransferError, match="already exists"):
        export_project(src, "P", "coco", out)
    assert (out / "keep.txt").read_text() == "mine"
    from projects.formats import coco as coco_mod

    def broken(data, file, image_dir="images"):
        file.write_text("{half")
        raise OSError("disk full")

    monkeypatch.setattr(coco_mod, "write_coco", broken)
    with pytest.raises(OSError, match="disk full"):
        export_project(src, "P", "coco", tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_dry_run_writes_nothing(tmp_path, target):
    src = make_source(tmp_path / "src")
    export_project(src, "P", "voc", tmp_path / "out")
    before = snapshot(target, tmp_path / "ws")
    rep = import_annotations(target, "T", "voc", tmp_path / "out", ImportOptions(dry_run=True))
    assert rep.dry_run and rep.lines()[0].startswith("would import")
    assert snapshot(target, tmp_path / "ws") == before

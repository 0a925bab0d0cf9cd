"""The project archive: nothing lost between workspaces, and reading it refuses unsafe zips."""

from __future__ import annotations

import json
import stat
import zipfile

import pytest
from test_formats_support import make_source, snapshot

from projects.formats import FormatError, ImportOptions, TransferError, export_project, import_annotations
from projects.formats.archive import Limits, read_archive
from projects.taxonomy import Node, SuperTaxonomy
from projects.workspace import Workspace


def _history(ws: Workspace, project: str) -> list[tuple]:
    rows = []
    for iid in ws.image_ids(project):
        im = ws.image(iid)
        for a in ws.annotations(iid, include_deleted=True):
            model = ws.db.execute("SELECT version FROM models WHERE id=?", [a["model_id"]]).fetchone()
            rows.append((im["sha256"], im["status"], im["added_at"], a["label"], a["node"], a["x1"], a["y1"], a["x2"],
                         a["y2"], a["provenance"], a["author"], model[0] if model else None, a["created_at"],
                         a["updated_at"], a["deleted_at"]))
    return sorted(rows, key=repr)


def test_archive_keeps_everything(tmp_path):
    src = make_source(tmp_path / "src")
    model = src.register_model("v7", tmp_path / "m.safetensors")
    first = src.image_ids("P")[0]
    lab = src.labels("P")[0]["id"]
    src.add_annotation(first, lab, (1, 2, 3, 4), provenance="prelabel_accepted", author="bob", model_id=model)
    gone = src.add_annotation(first, lab, (5, 6, 7, 8), provenance="refined", author="eve")
    src.delete_annotation(gone)
    export_project(src, "P", "archive", tmp_path / "p.zip")

    # The target's super-taxonomy lacks every node the project uses: they are created, parents first.
    dst = Workspace.create(tmp_path / "dst", SuperTaxonomy([Node("animal"), Node("dog", "animal")]))
    dst.register_model("v7", tmp_path / "other.safetensors")
    rep = import_annotations(dst, "P", "archive", tmp_path / "p.zip")
    assert rep.project_created
    assert _history(dst, "P") == _history(src, "P")
    assert dst.taxonomy("P").labels == src.taxonomy("P").labels  # names, nodes, colours, shortcuts
    assert dst.taxonomy("P").rules == src.taxonomy("P").rules
    assert dst.super_taxonomy().parent["car"] == "vehicle"
    images = [dst.image(i) for i in dst.image_ids("P")]
    assert all(dst.image_path(im["path"]).is_file() for im in images)
    assert all(not im["path"].startswith("/") for im in images)  # copied inside the workspace


def test_archive_reports_a_model_version_it_cannot_link(tmp_path):
    src = make_source(tmp_path / "src")
    model = src.register_model("v9", tmp_path / "m.safetensors")
    src.add_annotation(src.image_ids("P")[0], src.labels("P")[0]["id"], (1, 2, 3, 4),
                       provenance="prelabel_accepted", model_id=model)
    export_project(src, "P", "archive", tmp_path / "p.zip")
    dst = Workspace.create(tmp_path / "dst")
    rep = import_annotations(dst, "P", "archive", tmp_path / "p.zip")
    kind = "annotations whose model version is not in this workspace (model link dropped)"
    assert rep.counts[kind] == 1 and "v9" in rep.examples[kind][0]


def _zip(path, entries, manifest=None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
        if manifest is not None:
            z.writestr("manifest.json", json.dumps(manifest))
    return path


@pytest.mark.parametrize("name", ["../evil.jpg", "/etc/evil.jpg", "images/../../evil.jpg", "C:/evil.jpg",
                                  "images\\..\\evil.jpg"])
def test_zip_slip_names_are_refused(tmp_path, name):
    z = _zip(tmp_path / "a.zip", [(name, b"x")], {"kind": "labeler-project-archive"})
    with pytest.raises(FormatError, match="unsafe entry name"):
        read_archive(z, tmp_path / "stage")
    assert not (tmp_path / "evil.jpg").exists() and not list((tmp_path).rglob("evil.jpg"))


def test_symlink_entries_are_refused(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as z:
        info = zipfile.ZipInfo("images/link.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(FormatError, match="symlink"):
        read_archive(path, tmp_path / "stage")


def test_zip_bombs_are_refused(tmp_path):
    bomb = _zip(tmp_path / "bomb.zip", [("images/a.jpg", b"\0" * (8 << 20))])  # 8 MiB of zeros: ratio ~1000
    with pytest.raises(FormatError, match="compression ratio"):
        read_archive(bomb, tmp_path / "stage")
    with pytest.raises(FormatError, match="over the limit"):
        read_archive(_zip(tmp_path / "big.zip", [("a", b"1" * 5000)]), tmp_path / "stage",
                     Limits(max_total_bytes=4000))
    with pytest.raises(FormatError, match="entries"):
        read_archive(_zip(tmp_path / "many.zip", [(f"{i}", b"") for i in range(5)]), tmp_path / "stage",
                     Limits(max_entries=4))


def test_tampered_image_is_refused_and_nothing_changes(tmp_path):
    src = make_source(tmp_path / "src")
    export_project(src, "P", "archive", tmp_path / "p.zip")
    with zipfile.ZipFile(tmp_path / "p.zip") as z, zipfile.ZipFile(tmp_path / "bad.zip", "w") as out:
        for info in z.infolist():
            data = z.read(info)
            out.writestr(info, data[:-10] + b"0123456789" if info.filename.endswith(".png") else data)
    dst = Workspace.create(tmp_path / "dst")
    before = snapshot(dst, tmp_path / "dst")
    with pytest.raises(FormatError, match="sha256"):
        import_annotations(dst, "P", "archive", tmp_path / "bad.zip")
    assert snapshot(dst, tmp_path / "dst") == before


def test_manifest_errors_name_the_json_path(tmp_path):
    src = make_source(tmp_path / "src")
    export_project(src, "P", "archive", tmp_path / "p.zip")
    with zipfile.ZipFile(tmp_path / "p.zip") as z:
        manifest = json.loads(z.read("manifest.json"))
        images = [(i.filename, z.read(i)) for i in z.infolist() if i.filename != "manifest.json"]
    manifest["annotations"][2][6] = "stolen"
    _zip(tmp_path / "bad.zip", images, manifest)
    with pytest.raises(FormatError, match=r"manifest.json: \$\.annotations\[2\]\[6\]: unknown provenance"):
        import_annotations(Workspace.create(tmp_path / "dst"), "P", "archive", tmp_path / "bad.zip")


def test_not_a_zip(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(TransferError, match="not a readable zip"):
        import_annotations(Workspace.create(tmp_path / "dst"), "P", "archive", tmp_path / "x.zip")


def test_archive_into_an_existing_project_keeps_its_labels_and_says_so(tmp_path):
    src = make_source(tmp_path / "src")
    export_project(src, "P", "archive", tmp_path / "p.zip")
    dst = Workspace.create(tmp_path / "dst")
    dst.add_project("P")
    dst.add_label("P", "Car", "vehicle")  # the archive maps Car to car
    with pytest.raises(TransferError, match="labels not in project 'P'.*'Human'.*'Light'"):
        import_annotations(dst, "P", "archive", tmp_path / "p.zip")
    rep = import_annotations(dst, "P", "archive", tmp_path / "p.zip", ImportOptions(add_labels=True))
    kind = "labels mapped to another node in the archive than in this project (the project's kept)"
    assert rep.counts[kind] == 1 and "Car: archive 'car', project 'vehicle'" in rep.examples[kind][0]
    assert {lab["name"]: lab["node"] for lab in dst.labels("P")} == {"Car": "vehicle", "Human": "person",
                                                                     "Light": "traffic_light"}
    assert rep.boxes_imported == 6

"""Untrusted input is bounded: alias bombs, zip bombs of small entries, huge numbers, symlinks and FIFOs in an
import folder, names that are not UTF-8, and imports killed halfway. Each one is a clean one-line error (or is
handled), never a traceback, a hang, a flood of text or a leftover in the workspace."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_formats_support import TAXONOMY, make_source, snapshot

from labeler.cli import main
from projects.formats import FormatError, ImportOptions, TransferError, export_project, import_annotations, load_mapping
from projects.formats.archive import read_archive
from projects.formats.importer import remove_stale_scratch, scratch_folder
from projects.imaging import write_image
from projects.taxonomy import CustomerTaxonomy, SuperTaxonomy, TaxonomyError
from projects.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
SHORT = 1000  # an error message about untrusted input stays about one line


@pytest.fixture
def target(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    ws.add_project("T", TAXONOMY)
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """One export per format of the shared small project, to damage copies of."""
    root = tmp_path_factory.mktemp("exports")
    ws = make_source(root / "src")
    for fmt in ("coco", "voc", "yolo", "cvat", "labelstudio", "labelme"):
        export_project(ws, "P", fmt, root / fmt)
    export_project(ws, "P", "archive", root / "p.zip")
    ws.close()
    return root


def img(path: Path, w: int = 100, h: int = 50) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.full((h, w, 3), 7, dtype=np.uint8))
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def finishes(fn, seconds: float = 20) -> BaseException | None:
    """Run fn in a thread; fail the test if it is still running after `seconds` (a FIFO read blocks forever)."""
    box: dict[str, BaseException | None] = {"error": None}

    def target():
        try:
            fn()
        except BaseException as e:  # handed to the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "still blocked: a FIFO was opened for reading"
    return box["error"]


# --- YAML: alias bombs, recursion, depth, values echoed in full -----------------------------------------------
def alias_bomb(levels: int = 9, key: str = "names") -> str:
    """`levels` levels of 9 aliases: a 1 KB file that means 9**levels strings."""
    text = 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for k in range(1, levels):
        text += f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]\n"
    return text + f"{key}: *a{levels - 1}\n"


def test_an_alias_bomb_in_data_yaml_is_refused_in_one_short_line(tmp_path, target, capsys):
    folder = tmp_path / "y"
    folder.mkdir()
    (folder / "data.yaml").write_text(alias_bomb())
    start = time.perf_counter()
    with pytest.raises(FormatError, match=r"data\.yaml: line \d+: not valid YAML \(.*alias bomb") as e:
        import_annotations(target, "T", "yolo", folder)
    assert len(str(e.value)) < SHORT and time.perf_counter() - start < 10
    code, out, err = run_cli(capsys, "import", tmp_path / "ws", "--project", "T", "--format", "yolo", folder)
    assert code == 2 and err.startswith("labeler: error:") and "alias bomb" in err and len(err) < SHORT


def test_an_alias_bomb_in_a_taxonomy_or_map_file_is_refused(tmp_path, target, capsys):
    (tmp_path / "tax.yaml").write_text(alias_bomb(key="labels"))
    with pytest.raises(TaxonomyError, match=r"tax\.yaml: line \d+ not valid YAML/JSON \(.*alias bomb") as e:
        CustomerTaxonomy.load(tmp_path / "tax.yaml")
    assert len(str(e.value)) < SHORT
    code, _, err = run_cli(capsys, "project", "add", tmp_path / "ws", "Q", "--taxonomy", tmp_path / "tax.yaml")
    assert code == 2 and "alias bomb" in err and len(err) < SHORT
    (tmp_path / "map.yaml").write_text(alias_bomb(key="Car"))
    with pytest.raises(FormatError, match=r"map\.yaml: line \d+: not valid YAML/JSON \(.*alias bomb") as e:
        load_mapping(tmp_path / "map.yaml")
    assert len(str(e.value)) < SHORT


@pytest.mark.parametrize("text", ["names: &a [x, *a]\n", "names: " + "[" * 50_000 + "\n",
                                  "a: &a x\n" + "".join(f"k{i}: *a\n" for i in range(2000))],
                         ids=["recursive", "deep", "2000-aliases"])
def test_recursive_deep_or_alias_heavy_yaml_is_a_clean_error(tmp_path, target, text):
    folder = tmp_path / "y"
    folder.mkdir()
    (folder / "data.yaml").write_text(text)
    with pytest.raises(FormatError, match=r"data\.yaml: .*not valid YAML \((a recursive alias|nested too deeply|"
                                          r"more than 1000 aliases)"):
        import_annotations(target, "T", "yolo", folder)
    (tmp_path / "super.yaml").write_text(text.replace("names:", "nodes:"))
    with pytest.raises(TaxonomyError, match="not valid YAML/JSON"):
        SuperTaxonomy.load(tmp_path / "super.yaml")


def test_a_huge_value_is_never_echoed_in_full(tmp_path, target):
    big = "x" * 1_000_000
    (tmp_path / "tax.yaml").write_text(json.dumps({"labels": [big]}))
    with pytest.raises(TaxonomyError, match="expected {name: ..., node: ...}") as e:
        CustomerTaxonomy.load(tmp_path / "tax.yaml")
    assert len(str(e.value)) < SHORT and "1,000,002 characters" in str(e.value)
    (tmp_path / "map.yaml").write_text(json.dumps({"Car": [big]}))
    with pytest.raises(FormatError, match="expected a label name or null") as e:
        load_mapping(tmp_path / "map.yaml")
    assert len(str(e.value)) < SHORT
    folder = tmp_path / "y"
    folder.mkdir()
    (folder / "data.yaml").write_text(json.dumps({"names": [[big]], "train": "."}))
    with pytest.raises(FormatError, match=r"names\[0\]: expected a class name") as e:
        import_annotations(target, "T", "yolo", folder)
    assert len(str(e.value)) < SHORT
    img(tmp_path / "c" / "a.jpg")
    (tmp_path / "c" / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "Car"}],
        "annotations": [{"id": 1, "image_id": big, "category_id": 1, "bbox": [1, 1, 2, 2]}]}))
    with pytest.raises(FormatError, match=r"\$\.annotations\[0\]\.image_id: no image with id") as e:
        import_annotations(target, "T", "coco", tmp_path / "c")
    assert len(str(e.value)) < SHORT


def test_many_unknown_labels_and_long_image_names_make_a_short_message(tmp_path, target):
    img(tmp_path / "c" / "a.jpg")
    cats = [{"id": i + 1, "name": f"label-{i}-" + "y" * 500} for i in range(20_000)]
    anns = [{"id": i, "image_id": 1, "category_id": i + 1, "bbox": [1, 1, 2, 2]} for i in range(20_000)]
    (tmp_path / "c" / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}], "categories": cats, "annotations": anns}))
    with pytest.raises(TransferError, match=r"labels not in project 'T': 'label-0-y+.*\.\.\. and 19980 more") as e:
        import_annotations(target, "T", "coco", tmp_path / "c")
    assert len(str(e.value)) < 5000
    (tmp_path / "c" / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "z" * 1_000_000 + ".jpg"}], "categories": [{"id": 1, "name": "Car"}],
        "annotations": []}))
    with pytest.raises(TransferError, match="1 images named in the annotations cannot be found") as e:
        import_annotations(target, "T", "coco", tmp_path / "c")
    assert len(str(e.value)) < SHORT


# --- archives: the ratio check on every entry, before anything is written ----------------------------------
def _archive_of_zeros(path: Path, n: int, size: int) -> Path:
    data = b"\0" * size
    sha = hashlib.sha256(data).hexdigest()
    manifest = {"kind": "labeler-project-archive", "version": 1, "project": "Z",
                "taxonomy": {"labels": [{"name": "Car", "node": "car"}], "rules": {},
                             "nodes": [{"name": "vehicle", "parent": None}, {"name": "car", "parent": "vehicle"}]},
                "images": [{"file": f"images/{i}.png", "sha256": sha, "width": 8, "height": 8, "status": "submitted"}
                           for i in range(n)],
                "annotations": []}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest))
        for i in range(n):
            z.writestr(f"images/{i}.png", data)
    return path


@pytest.mark.parametrize("n,size", [(20, 1 << 20), (50, 64 << 10)])
def test_small_zip_bomb_entries_are_refused_before_anything_is_written(tmp_path, target, n, size):
    """Entries of 1 MiB and less skipped the ratio check: 200 of them wrote 206 MB before failing."""
    bomb = _archive_of_zeros(tmp_path / "bomb.zip", n, size)
    with pytest.raises(FormatError, match=r"bomb\.zip: images/0\.png: compression ratio over 200"):
        read_archive(bomb, tmp_path / "stage")
    assert not (tmp_path / "stage").exists() or not [p for p in (tmp_path / "stage").rglob("*") if p.is_file()]
    before = snapshot(target, tmp_path / "ws")
    with pytest.raises(FormatError, match="compression ratio"):
        import_annotations(target, "Z", "archive", bomb)
    assert snapshot(target, tmp_path / "ws") == before  # no project, no image, no scratch folder


# --- huge and non-finite numbers: a FormatError naming the file and the field ----------------------------------
HUGE, INF = 10**400, float("inf")  # json.dumps writes them as 400 digits and as Infinity


def _first_labelme(folder: Path) -> Path:
    return next(p for p in sorted(folder.glob("*.json")) if json.loads(p.read_text())["shapes"])


def _set(*keys):
    def edit(doc, value):
        for k in keys[:-1]:
            doc = doc[k]
        doc[keys[-1]] = value
    return edit


NUMBER_CASES = [  # format, file, edit, value, message: each was an OverflowError/ValueError traceback or accepted
    ("coco", "annotations.json", _set("annotations", 0, "bbox", 0), HUGE,
     r"annotations\.json: \$\.annotations\[0\]\.bbox\[0\]: number too large \(an integer of about 401 digits\)"),
    ("coco", "annotations.json", _set("images", 0, "width"), HUGE,
     r"annotations\.json: \$\.images\[0\]\.width: whole number out of range"),
    ("labelme", None, _set("shapes", 0, "points", 0, 0), HUGE,
     r"\.json: \$\.shapes\[0\]\.points\[0\]\[0\]: number too large"),
    ("labelme", None, _set("imageWidth"), HUGE, r"\.json: \$\.imageWidth: whole number out of range"),
    ("labelstudio", "result.json", _set(0, "annotations", 0, "result", 0, "original_width"), HUGE,
     r"result\.json: \$\[0\]\.annotations\[0\]\.result\[0\]\.original_width: number too large"),
    ("labelstudio", "result.json", _set(0, "annotations", 0, "result", 0, "original_width"), INF,
     r"result\.json: \$\[0\]\.annotations\[0\]\.result\[0\]\.original_width: expected a finite number"),
    ("labelstudio", "result.json", _set(0, "annotations", 0, "result", 0, "value", "rotation"), INF,
     r"result\.json: .*\.value\.rotation: expected a finite number"),
]


@pytest.mark.parametrize("fmt,name,edit,value,message", NUMBER_CASES,
                         ids=["coco-bbox", "coco-width", "labelme-point", "labelme-width", "labelstudio-size",
                              "labelstudio-size-inf", "labelstudio-rotation-inf"])
def test_huge_numbers_name_the_file_and_field(tmp_path, target, exports, fmt, name, edit, value, message):
    shutil.copytree(exports / fmt, tmp_path / fmt)
    f = tmp_path / fmt / name if name else _first_labelme(tmp_path / fmt)
    doc = json.loads(f.read_text())
    edit(doc, value)
    f.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=message):
        import_annotations(target, "T", fmt, tmp_path / fmt)


def test_huge_numbers_in_an_archive_and_in_json_text(tmp_path, target, exports):
    with zipfile.ZipFile(exports / "p.zip") as z:
        entries = {i.filename: z.read(i) for i in z.infolist()}
    for text, message in [(lambda m: m.replace('"__N__"', "1" + "0" * 400),
                           r"manifest\.json: \$\.annotations\[0\]\[2\]: number too large"),
                          (lambda m: m.replace('"__N__"', "1" + "0" * 5000), r"manifest\.json: not valid JSON")]:
        doc = json.loads(entries["manifest.json"])
        doc["annotations"][0][2] = "__N__"
        with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
            for name, raw in entries.items():
                z.writestr(name, text(json.dumps(doc)) if name == "manifest.json" else raw)
        with pytest.raises(FormatError, match=message):
            import_annotations(target, "New", "archive", tmp_path / "a.zip")
    img(tmp_path / "c" / "a.jpg")
    (tmp_path / "c" / "annotations.json").write_text('{"images": [{"id": 1' + "0" * 5000 + "}]}")
    with pytest.raises(FormatError, match=r"annotations\.json: not valid JSON \(Exceeds the limit"):
        import_annotations(target, "T", "coco", tmp_path / "c")


def test_a_non_finite_rotation_and_a_huge_circle(tmp_path, target, exports):
    shutil.copytree(exports / "cvat", tmp_path / "cvat")
    xml = tmp_path / "cvat" / "annotations.xml"
    xml.write_text(xml.read_text().replace("<box ", '<box rotation="inf" ', 1))
    with pytest.raises(FormatError, match=r"annotations\.xml: .*/@rotation: expected a finite number"):
        import_annotations(target, "T", "cvat", tmp_path / "cvat")
    shutil.copytree(exports / "labelme", tmp_path / "lm")
    f = _first_labelme(tmp_path / "lm")
    doc = json.loads(f.read_text())
    doc["shapes"][0].update(shape_type="circle", points=[[1, 1], [1e300, 1]])  # r**2 overflowed a float
    f.write_text(json.dumps(doc))
    rep = import_annotations(target, "T", "labelme", tmp_path / "lm", ImportOptions(dry_run=True))
    assert rep.counts["boxes partly outside the image, clamped"] == 1


# --- symlinks and special files in an import folder -------------------------------------------------------------
def test_an_annotation_symlink_leading_outside_is_not_followed(tmp_path, target):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("SECRET-FIRST-LINE root:x:0:0\n")
    yolo = tmp_path / "yolo"
    img(yolo / "a.jpg")
    (yolo / "classes.txt").write_text("Car\n")
    (yolo / "a.txt").symlink_to(secret)
    with pytest.raises(FormatError, match=r"a\.txt: a symlink leading outside .*yolo: not followed") as e:
        import_annotations(target, "T", "yolo", yolo)
    assert "SECRET" not in str(e.value)
    # a labelme file outside, valid in itself: it was imported through the link
    outside = tmp_path / "outside" / "x.json"
    img(tmp_path / "outside" / "a.jpg")
    outside.write_text(json.dumps({"imagePath": "a.jpg", "shapes": [{"label": "Car", "points": [[1, 1], [5, 5]],
                                                                     "shape_type": "rectangle"}]}))
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "x.json").symlink_to(outside)
    with pytest.raises(FormatError, match="symlink leading outside"):
        import_annotations(target, "T", "labelme", tmp_path / "lm")
    # a whole annotation folder linked out of the dataset
    (tmp_path / "voc").mkdir()
    (tmp_path / "voc" / "Annotations").symlink_to(tmp_path / "outside")
    (tmp_path / "outside" / "a.xml").write_text("<annotation><filename>a.jpg</filename></annotation>")
    with pytest.raises(FormatError, match="symlink leading outside"):
        import_annotations(target, "T", "voc", tmp_path / "voc")
    assert target.image_ids("T") == []


def test_a_file_the_user_names_may_be_a_symlink(tmp_path, target):
    img(tmp_path / "c" / "a.jpg")
    real = tmp_path / "elsewhere" / "instances.json"
    real.parent.mkdir()
    real.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "Car"}],
                                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}]}))
    (tmp_path / "c" / "annotations.json").symlink_to(real)
    rep = import_annotations(target, "T", "coco", tmp_path / "c" / "annotations.json")
    assert rep.boxes_imported == 1


def test_fifos_never_block_an_import(tmp_path, target):
    lm = tmp_path / "lm"
    lm.mkdir()
    os.mkfifo(lm / "a.json")
    error = finishes(lambda: import_annotations(target, "T", "labelme", lm))
    assert isinstance(error, FormatError) and "a.json: cannot read (not a regular file" in str(error)
    os.mkfifo(tmp_path / "p.zip")
    error = finishes(lambda: import_annotations(target, "New", "archive", tmp_path / "p.zip"))
    assert isinstance(error, FormatError) and "p.zip: cannot read (not a regular file" in str(error)
    os.mkfifo(tmp_path / "map.yaml")
    error = finishes(lambda: load_mapping(tmp_path / "map.yaml"))
    assert isinstance(error, TransferError) and "not a regular file" in str(error)
    os.mkfifo(tmp_path / "tax.yaml")
    error = finishes(lambda: CustomerTaxonomy.load(tmp_path / "tax.yaml"))
    assert isinstance(error, TaxonomyError) and "not a regular file" in str(error)


# --- names that are not UTF-8 ------------------------------------------------------------------------------------
def test_image_names_that_are_not_utf8_are_named_and_skippable(tmp_path, target):
    folder = tmp_path / "yolo"
    img(folder / "good.jpg")
    img(folder / "tmp.jpg")
    os.rename(os.fsencode(folder / "tmp.jpg"), os.fsencode(folder) + b"/\xffbad.jpg")
    (folder / "classes.txt").write_text("Car\n")
    for stem in ("good", os.fsdecode(b"\xffbad")):
        (folder / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    before = snapshot(target, tmp_path / "ws")
    with pytest.raises(TransferError, match=r"\\xffbad\.jpg: the file name is not valid UTF-8; rename the file"):
        import_annotations(target, "T", "yolo", folder)
    assert snapshot(target, tmp_path / "ws") == before
    rep = import_annotations(target, "T", "yolo", folder, ImportOptions(skip_missing=True))
    assert rep.boxes_imported == 1 and rep.counts["unreadable images, skipped with their boxes"] == 1
    r = subprocess.run([sys.executable, "-m", "labeler", "import", str(tmp_path / "ws"), "--project", "T",
                        "--format", "yolo", os.fsdecode(folder)], capture_output=True, cwd=ROOT, timeout=600)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2 and "Traceback" not in err and "not valid UTF-8" in err


# --- dry run ---------------------------------------------------------------------------------------------------
def test_a_dry_run_reports_what_the_import_would_do(tmp_path, target, exports):
    dry = import_annotations(target, "T", "voc", exports / "voc", ImportOptions(dry_run=True))
    assert dry.lines()[0].startswith("would import 6 boxes on 4 images (4 new, 0 already in the project)")
    real = import_annotations(target, "T", "voc", exports / "voc")
    assert (real.boxes_imported, real.images_added, real.images_existing) == \
        (dry.boxes_imported, dry.images_added, dry.images_existing)
    again = import_annotations(target, "T", "voc", exports / "voc", ImportOptions(dry_run=True))
    assert again.lines()[0].startswith("would import 0 boxes on 4 images (0 new, 4 already in the project)")


# --- scratch folders and imports killed halfway -------------------------------------------------------------------
def test_a_live_scratch_folder_is_kept_and_old_unlocked_ones_go(tmp_path, target):
    with scratch_folder(target) as live:
        assert remove_stale_scratch(target) == [] and live.is_dir()
        old, young = tmp_path / "ws" / ".import-old", tmp_path / "ws" / ".import-young"
        old.mkdir()
        young.mkdir()
        os.utime(old, (time.time() - 3 * 86400,) * 2)
        assert remove_stale_scratch(target) == [old]
        assert live.is_dir() and young.is_dir()
    assert not live.exists()


KILLED_IMPORT = textwrap.dedent("""
    import sys, time
    from projects.formats import archive, import_annotations
    from projects.workspace import Workspace

    def pause_after(owner, name):
        original = getattr(owner, name)
        def paused(*a, **k):
            out = original(*a, **k)
            print("paused", flush=True)
            time.sleep(600)
            return out
        setattr(owner, name, paused)

    if sys.argv[3] == "reading":
        pause_after(archive, "_extract")  # one image staged in the scratch folder
    else:
        pause_after(Workspace, "bulk_import")  # images moved into the workspace, rows written, not committed
    with Workspace.open(sys.argv[1]) as ws:
        import_annotations(ws, "New", "archive", sys.argv[2])
""")


@pytest.mark.parametrize("stage", ["reading", "writing"])
def test_an_import_killed_halfway_leaves_nothing_and_the_next_one_cleans_up(tmp_path, target, exports, stage):
    ws_dir = tmp_path / "ws"
    before = snapshot(target, ws_dir)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_IMPORT, str(ws_dir), str(exports / "p.zip"), stage],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "paused"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert target.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    tables, files = snapshot(target, ws_dir)
    assert tables == before[0]  # all or nothing: no project, no image row, no box
    assert any(f.startswith(".import-") for f in files)  # what SIGKILL leaves: the scratch folder (and moved images)
    # The next import, even a dry run, removes the dead import's scratch folder and the files it moved in.
    import_annotations(target, "T", "voc", exports / "voc", ImportOptions(dry_run=True))
    assert snapshot(target, ws_dir) == before
    rep = import_annotations(target, "New", "archive", exports / "p.zip")
    assert rep.project_created and rep.boxes_imported == 6
    assert not [p for p in ws_dir.iterdir() if p.name.startswith(".import-")]
    assert all(target.image_path(target.image(i)["path"]).is_file() for i in target.image_ids("New"))

"""Shared helpers for the format tests (no tests here): a small project with known boxes, and readers back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from projects.imaging import probe_image, write_image
from projects.taxonomy import CustomerTaxonomy, Label
from projects.workspace import Workspace

TAXONOMY = CustomerTaxonomy([Label("Car", "car", "#4363d8", "1"), Label("Human", "person", "#e6194b", "2"),
                             Label("Light", "traffic_light", "#3cb44b", "3")],
                            rules={"vehicle_mirrors": False, "domain": "day"}, name="P")

# Per image: (width, height, [(label, x1, y1, x2, y2), ...]); floats on purpose, one image with no boxes,
# one box touching the right and bottom edges, two images sharing a file name in different folders.
IMAGES = [
    ("a/cam1.jpg", 96, 64, [("Car", 10.25, 5.5, 40.75, 30.0), ("Human", 50.0, 10.0, 60.5, 40.25)]),
    ("b/cam1.jpg", 80, 80, [("Light", 0.0, 0.0, 80.0, 80.0)]),
    ("c/empty.png", 64, 48, []),
    ("c/many.png", 128, 96, [("Car", 1.0, 2.0, 30.0, 20.0), ("Car", 31.5, 2.0, 60.0, 21.0),
                             ("Human", 100.0, 50.0, 128.0, 96.0)]),
]


def make_source(folder: Path, project: str = "P", images: list | None = None) -> Workspace:
    """A workspace with one project holding IMAGES (or `images`) as real files and their boxes."""
    ws = Workspace.create(folder / "ws")
    ws.add_project(project, TAXONOMY)
    label_ids = {lab["name"]: lab["id"] for lab in ws.labels(project)}
    rng = np.random.default_rng(0)
    for name, w, h, boxes in images or IMAGES:
        path = folder / "ws" / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        iid = ws.insert_images(ws.project_id(project), [probe_image(path)]).added[0]
        for label, *box in boxes:
            ws.add_annotation(iid, label_ids[label], tuple(box), provenance="manual", author="ann")
        if boxes:
            ws.set_status(iid, "submitted")
    return ws


def boxes_by_content(ws: Workspace, project: str) -> dict[str, list[tuple]]:
    """Image sha256 -> sorted (label, x1, y1, x2, y2): comparable across workspaces and file paths."""
    out: dict[str, list[tuple]] = {}
    for iid in ws.image_ids(project):
        im = ws.image(iid)
        out[im["sha256"]] = sorted((a["label"], a["x1"], a["y1"], a["x2"], a["y2"]) for a in ws.annotations(iid))
    return out


def assert_same_boxes(a: dict[str, list[tuple]], b: dict[str, list[tuple]], tol: float) -> None:
    assert a.keys() == b.keys()
    for sha in a:
        assert len(a[sha]) == len(b[sha]), sha
        for p, q in zip(a[sha], b[sha]):
            assert p[0] == q[0]
            assert np.allclose(p[1:], q[1:], atol=tol, rtol=0), (p, q)


def snapshot(ws: Workspace, folder: Path) -> tuple:
    """Everything an import could change: every table's rows and the files under the workspace folder."""
    tables = {t: list(ws.db.execute(f"SELECT * FROM [{t}] ORDER BY 1")) for t in ws.db.table_names()}
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if "labeler.sqlite" not in p.name)
    return tables, files

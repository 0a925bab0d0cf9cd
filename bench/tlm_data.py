"""Workspaces for the Taxonomy Loss Masking comparison (bench/bench_tlm.py).

- BCCD (../shared/data/BCCD, MIT, Shenggan/BCCD_Dataset): its VOC files are read here with defusedxml
  (a small reader of our own, so the benchmark does not wait on the product's importer), and its three
  classes are split across three simulated customers who name them differently:
  `R` labels red cells only, `WP` white cells and platelets, `All` all three.
- The synthetic three-customer workspace of the demo, every image submitted.
- The *oracle* variant of either: the same image files, every object labelled by every customer.

Each workspace gets `ground_truth.json` (full ground truth in super-taxonomy nodes, keyed by the stored
image path), the format `inference.evaluate.evaluate_ground_truth` reads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from defusedxml import ElementTree

from projects.demo import GROUND_TRUTH, build_demo
from projects.taxonomy import CustomerTaxonomy, Label, Node, SuperTaxonomy
from projects.workspace import Workspace

BCCD_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "BCCD"
BCCD_NODES = {"RBC": "rbc", "WBC": "wbc", "Platelets": "platelets"}
BCCD_CUSTOMERS = {
    "R": [("red_cell", "rbc")],
    "WP": [("Leukocyte", "wbc"), ("Thrombocyte", "platelets")],
    "All": [("erythrocyte", "rbc"), ("leukocyte", "wbc"), ("platelet", "platelets")],
}


@dataclass(frozen=True)
class VocObject:
    name: str
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class VocImage:
    filename: str
    width: int
    height: int
    objects: tuple[VocObject, ...]
    dropped: int  # zero-area boxes left out


def read_voc(path: Path) -> VocImage:
    """One Pascal VOC XML file; zero-area boxes (BCCD has two) are counted and left out."""
    try:
        root = ElementTree.parse(path).getroot()
    except Exception as e:
        raise ValueError(f"{path}: not a readable VOC XML file ({e})") from e
    size = root.find("size")
    if size is None or root.findtext("filename") is None:
        raise ValueError(f"{path}: missing <filename> or <size>")
    w, h = int(float(size.findtext("width"))), int(float(size.findtext("height")))
    objects, dropped = [], 0
    for i, obj in enumerate(root.iter("object")):
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"{path}: object {i} has no <bndbox>")
        x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        x1, x2 = max(0.0, min(x1, x2)), min(float(w), max(x1, x2))
        y1, y2 = max(0.0, min(y1, y2)), min(float(h), max(y1, y2))
        if x2 - x1 < 1 or y2 - y1 < 1:
            dropped += 1
            continue
        objects.append(VocObject(obj.findtext("name").strip(), (x1, y1, x2, y2)))
    return VocImage(root.findtext("filename").strip(), w, h, tuple(objects), dropped)


def _customer_of(filename: str, names: list[str]) -> str:
    """A stable customer for each image (SHA-256 of its name), so reruns split the same way."""
    return names[int(hashlib.sha256(filename.encode()).hexdigest(), 16) % len(names)]


def build_bccd(folder: Path, bccd: Path = BCCD_DEFAULT, oracle: bool = False, limit: int | None = None) -> Workspace:
    sup = SuperTaxonomy([Node(n) for n in BCCD_NODES.values()], name="blood")
    ws = Workspace.create(folder, sup)
    ann_dir, img_dir = bccd / "BCCD" / "Annotations", bccd / "BCCD" / "JPEGImages"
    files = sorted(ann_dir.glob("*.xml"))[:limit]
    if not files:
        raise FileNotFoundError(f"{ann_dir}: no VOC files (is ../shared/data/BCCD there?)")
    customers = list(BCCD_CUSTOMERS)
    truth: dict[str, list[dict]] = {}
    with ws.transaction():
        for name, labels in BCCD_CUSTOMERS.items():
            if oracle:
                labels = BCCD_CUSTOMERS["All"]
            ws.add_project(name, CustomerTaxonomy([Label(a, n) for a, n in labels], name=name))
        label_ids = {p: {lab["node"]: lab["id"] for lab in ws.labels(p)} for p in customers}
        for xml in files:
            voc = read_voc(xml)
            project = _customer_of(voc.filename, customers)
            res = ws.add_images(project, [img_dir / voc.filename])
            if not res.added:
                raise ValueError(f"{img_dir / voc.filename}: {'; '.join(res.skipped)}")
            image_id = res.added[0]
            stored = ws.image(image_id)["path"]
            truth[stored] = []
            for o in voc.objects:
                node = BCCD_NODES[o.name]
                truth[stored].append({"node": node, "box": list(o.box)})
                if node in label_ids[project]:
                    ws.add_annotation(image_id, label_ids[project][node], o.box, provenance="imported", author="bccd")
            ws.set_status(image_id, "submitted")
    (folder / GROUND_TRUTH).write_text(json.dumps({"note": "BCCD, every object", "images": truth}))
    return ws


def build_synthetic(folder: Path, n_images: int, seed: int) -> Workspace:
    """The demo's three customers with every image submitted."""
    return build_demo(folder, n_images=n_images, seed=seed, submitted_share=1.0)


FULL_DRIVING = [("Car", "car"), ("Truck", "truck"), ("Bus", "bus"), ("Motorcycle", "motorcycle"),
                ("Adult", "pedestrian_adult"), ("Child", "pedestrian_child"), ("Cyclist", "cyclist"),
                ("Traffic_light", "traffic_light"), ("Traffic_sign", "traffic_sign")]


def build_oracle_synthetic(source: Path, folder: Path) -> Workspace:
    """The same images as the synthetic workspace at `source`, every object labelled (with mirrors)."""
    src = Workspace.open(source)
    truth = json.loads((source / GROUND_TRUTH).read_text())["images"]
    ws = Workspace.create(folder, src.super_taxonomy())
    out_truth: dict[str, list[dict]] = {}
    with ws.transaction():
        for p in src.project_names():
            rules = dict(src.taxonomy(p).rules)
            rules["vehicle_mirrors"] = True
            labels = [Label(f"{p}_{a}", n, shortcut=None) for a, n in FULL_DRIVING]
            ws.add_project(p, CustomerTaxonomy(labels, rules, name=p))
            ids = {lab["node"]: lab["id"] for lab in ws.labels(p)}
            for image_id in src.image_ids(p, status="submitted"):
                row = src.image(image_id)
                path = src.image_path(row["path"])
                new_id = ws.add_images(p, [path]).added[0]
                objs = truth[row["path"]]
                out_truth[ws.image(new_id)["path"]] = objs
                for o in objs:
                    ws.add_annotation(new_id, ids[o["node"]], o["box"], provenance="imported", author="oracle")
                ws.set_status(new_id, "submitted")
    src.close()
    (folder / GROUND_TRUTH).write_text(json.dumps({"note": "oracle: every object", "images": out_truth}))
    return ws

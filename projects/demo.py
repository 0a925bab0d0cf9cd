"""Build the demo workspace: three customers whose taxonomies overlap, each in its own domain.

A labels only people (`Human`), B labels people by age, vehicles by kind and traffic lights, C labels
only vehicles (`Vehicle`, without mirrors). Most images of each project are submitted with the boxes
its customer would draw; the rest are left unlabeled for the annotator. The full ground truth in
super-taxonomy nodes goes to `ground_truth.json`, so models can be scored on every class.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from projects.imaging import ImageInfo, write_image
from projects.synthetic import customer_view, make_scene
from projects.taxonomy import CustomerTaxonomy, resource_path
from projects.workspace import Workspace, WorkspaceError

DEMO_PROJECTS = ("A", "B", "C")
GROUND_TRUTH = "ground_truth.json"


def build_demo(folder: str | Path, n_images: int = 90, seed: int = 0, submitted_share: float = 0.75,
               size: tuple[int, int] = (512, 320),
               progress: Callable[[int, int], None] | None = None) -> Workspace:
    folder = Path(folder)
    if Workspace.db_path(folder).exists():
        raise WorkspaceError(f"{folder}: a workspace already exists here; pick a new folder")
    ws = Workspace.create(folder)
    truth: dict[str, list[dict]] = {}
    rng = np.random.default_rng(seed)
    per_project = [n_images // 3 + (1 if k < n_images % 3 else 0) for k in range(3)]
    done = 0
    with ws.transaction():  # one transaction: a half-built demo never exists
        for name, count in zip(DEMO_PROJECTS, per_project):
            tax = CustomerTaxonomy.load(resource_path("taxonomies", f"{name}.yaml"))
            pid = ws.add_project(name, tax)
            view = ws.project_view(name)
            label_ids = {lab["name"]: lab["id"] for lab in ws.labels(name)}
            domain = tax.rules.get("domain", "day")
            img_dir = folder / "images" / name
            img_dir.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                scene = make_scene(seed * 100_003 + done, domain, size=size)
                path = img_dir / f"{name}_{k:05d}.jpg"
                write_image(path, scene.image)
                info = ImageInfo(path, hashlib.sha256(path.read_bytes()).hexdigest(), size[0], size[1])
                image_id = ws.insert_images(pid, [info]).added[0]
                truth[ws.stored_path(path)] = [
                    {"node": o.node, "box": list(o.box), "box_no_mirrors": list(o.box_no_mirrors)}
                    for o in scene.objects]
                if rng.random() < submitted_share:
                    for cb in customer_view(scene, view):
                        ws.add_annotation(image_id, label_ids[cb.label], cb.box, provenance="imported",
                                          author="demo")
                    ws.set_status(image_id, "submitted")
                done += 1
                if progress:
                    progress(done, n_images)
    (folder / GROUND_TRUTH).write_text(json.dumps({"note": "full ground truth in super-taxonomy nodes",
                                                   "images": truth}))
    return ws

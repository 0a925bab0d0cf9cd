"""The workspace: one folder holding `labeler.sqlite`, the source of truth for everything.

Every public method that writes does so in exactly one transaction (`db.atomic()`), so a crash at
any moment leaves the last committed edit on disk and nothing half-written. Connections run in
autocommit mode with WAL journaling: readers (the GUI) never block the writer (the inference
worker) and a killed process loses nothing it committed. Each thread opens its own Workspace.
"""

from __future__ import annotations

import getpass
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from projects.connection import connect, identify
from projects.errors import WorkspaceError
from projects.imaging import ImageError, ImageInfo, find_images, probe_image
from projects.schema import (
    APP_ID,
    FINDING_STATES,
    MIGRATIONS,
    PROPOSAL_DECISIONS,
    PROVENANCES,
    SCHEMA_VERSION,
    STATUSES,
)
from projects.split import split_bucket
from projects.taxonomy import (
    PALETTE,
    CustomerTaxonomy,
    Label,
    Node,
    ProjectView,
    SuperTaxonomy,
    default_super_taxonomy,
)
from projects.values import Box

DB_NAME = "labeler.sqlite"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def default_author() -> str:
    try:
        return os.environ.get("LABELER_AUTHOR") or getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


@dataclass(frozen=True)
class AddImagesResult:
    added: list[int]
    skipped: list[str]  # one reason per file, naming it


class Workspace:
    def __init__(self, folder: Path, db: Database):
        self.folder = folder
        self.db = db

    # --- opening ---------------------------------------------------------------------------
    @staticmethod
    def db_path(folder: str | Path) -> Path:
        p = Path(folder)
        return p if p.suffix == ".sqlite" else p / DB_NAME

    @classmethod
    def create(cls, folder: str | Path, super_taxonomy: SuperTaxonomy | None = None) -> Workspace:
        folder = Path(folder)
        path = cls.db_path(folder)
        if path.exists():
            raise WorkspaceError(f"{path}: a workspace already exists here" if path.is_file() and _is_sqlite(path)
                                 else f"{path}: already exists and is not a workspace; choose another folder")
        for parent in (path.parent, *path.parent.parents):
            if parent.exists() and not parent.is_dir():
                raise WorkspaceError(f"{parent}: is a file, not a folder; a workspace is a folder")
        sup = super_taxonomy or default_super_taxonomy()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WorkspaceError(f"{path.parent}: cannot create the workspace folder ({e.strerror or e})") from e
        ws = cls(path.parent.resolve(), connect(path))
        try:
            ws._migrate(0)
            with ws.db.atomic():
                ws.db["meta"].upsert({"key": "super_taxonomy_name", "value": sup.name}, pk="key")
                ws._insert_nodes(sup.nodes)
        except BaseException:
            ws.close()
            path.unlink(missing_ok=True)
            raise
        return ws

    @classmethod
    def open(cls, folder: str | Path) -> Workspace:
        path = cls.db_path(folder)
        if not path.is_file():
            raise WorkspaceError(f"{folder}: not a workspace (no {DB_NAME}); create one with `labeler init`")
        version = identify(path, APP_ID)  # read-only: a foreign or damaged file is refused untouched
        if version > SCHEMA_VERSION:
            raise WorkspaceError(f"{path}: schema version {version} is newer than this Labeler "
                                 f"understands ({SCHEMA_VERSION}); upgrade Labeler")
        ws = cls(path.parent.resolve(), connect(path))
        ws._migrate(ws.schema_version)
        return ws

    def _migrate(self, current: int) -> None:
        for version in range(current, SCHEMA_VERSION):
            with self.db.atomic():
                MIGRATIONS[version](self.db)
                self.db.execute(f"PRAGMA user_version = {version + 1}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Group several writes into one transaction (nested calls become savepoints)."""
        with self.db.atomic() as db:
            yield db

    # --- super-taxonomy --------------------------------------------------------------------
    def _insert_nodes(self, nodes: Sequence[Node]) -> None:
        ids = {r["name"]: r["id"] for r in self.db["nodes"].rows}
        start = len(ids)
        for i, n in enumerate(nodes):
            row = {"name": n.name, "parent_id": ids[n.parent] if n.parent else None, "position": start + i}
            ids[n.name] = self.db["nodes"].insert(row).last_pk

    def super_taxonomy(self) -> SuperTaxonomy:
        rows = self.db.execute(
            "SELECT n.name, p.name FROM nodes n LEFT JOIN nodes p ON p.id = n.parent_id ORDER BY n.position"
        ).fetchall()
        name = self.db.execute("SELECT value FROM meta WHERE key='super_taxonomy_name'").fetchone()
        return SuperTaxonomy([Node(a, b) for a, b in rows], name=name[0] if name else "super-taxonomy",
                             source=str(self.db_path(self.folder)))

    def node_ids(self) -> dict[str, int]:
        return {name: i for i, name in self.db.execute("SELECT id, name FROM nodes")}

    def ensure_node(self, name: str, parent: str | None = None) -> int:
        """The id of node `name`, appending it (as a top-level node by default) when it is new.

        Appending keeps existing node positions, so models trained before stay readable.
        """
        with self.db.atomic():
            ids = self.node_ids()
            if name not in ids:
                sup = self.super_taxonomy()
                SuperTaxonomy([*sup.nodes, Node(name, parent)], source="new node")  # validates
                self._insert_nodes([Node(name, parent)])
                ids = self.node_ids()
            return ids[name]

    # --- projects and labels ---------------------------------------------------------------
    def add_project(self, name: str, taxonomy: CustomerTaxonomy | None = None) -> int:
        if not name or not name.strip():
            raise WorkspaceError("a project needs a non-empty name")
        taxonomy = taxonomy or CustomerTaxonomy([], name=name)
        ProjectView(self.super_taxonomy(), taxonomy)  # validates against the tree, raises TaxonomyError
        with self.db.atomic():
            if self.db.execute("SELECT 1 FROM projects WHERE name = ?", [name]).fetchone():
                raise WorkspaceError(f"project {name!r} already exists")
            pid = self.db["projects"].insert({"name": name, "rules": json.dumps(taxonomy.rules),
                                              "created_at": now()}).last_pk
            for lab in taxonomy.labels:
                self._insert_label(pid, lab)
        return pid

    def _insert_label(self, project_id: int, lab: Label) -> int:
        nodes = self.node_ids()
        if lab.node not in nodes:
            raise WorkspaceError(f"label {lab.name!r}: unknown node {lab.node!r}")
        position = self.db.execute("SELECT COUNT(*) FROM labels WHERE project_id=?", [project_id]).fetchone()[0]
        return self.db["labels"].insert({"project_id": project_id, "name": lab.name, "node_id": nodes[lab.node],
                                         "color": lab.color, "shortcut": lab.shortcut,
                                         "position": position}).last_pk

    def add_label(self, project: str, name: str, node: str, color: str | None = None,
                  shortcut: str | None = None) -> int:
        pid = self.project_id(project)
        with self.db.atomic():
            n = self.db.execute("SELECT COUNT(*) FROM labels WHERE project_id=?", [pid]).fetchone()[0]
            if self.db.execute("SELECT 1 FROM labels WHERE project_id=? AND name=?", [pid, name]).fetchone():
                raise WorkspaceError(f"project {project!r} already has a label {name!r}")
            if shortcut is None and n < 9:
                shortcut = str(n + 1)
            return self._insert_label(pid, Label(name, node, color or PALETTE[n % len(PALETTE)], shortcut))

    def project_names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM projects ORDER BY id")]

    def project_id(self, name: str) -> int:
        row = self.db.execute("SELECT id FROM projects WHERE name = ?", [name]).fetchone()
        if row is None:
            known = ", ".join(self.project_names()) or "none"
            raise WorkspaceError(f"no project named {name!r} (projects: {known})")
        return row[0]

    def labels(self, project: str) -> list[dict[str, Any]]:
        """The project's labels in order: id, name, node, color, shortcut."""
        return [dict(r) for r in self._rows(
            "SELECT l.id, l.name, n.name AS node, l.color, l.shortcut, l.position FROM labels l "
            "JOIN nodes n ON n.id = l.node_id WHERE l.project_id = ? ORDER BY l.position",
            [self.project_id(project)])]

    def taxonomy(self, project: str) -> CustomerTaxonomy:
        pid = self.project_id(project)
        rules = json.loads(self.db.execute("SELECT rules FROM projects WHERE id=?", [pid]).fetchone()[0] or "{}")
        labels = [Label(r["name"], r["node"], r["color"] or PALETTE[0], r["shortcut"]) for r in self.labels(project)]
        return CustomerTaxonomy(labels, rules, name=project, source=f"workspace project {project!r}")

    def project_view(self, project: str) -> ProjectView:
        return ProjectView(self.super_taxonomy(), self.taxonomy(project))

    # --- images ----------------------------------------------------------------------------
    def stored_path(self, path: Path) -> str:
        """Relative to the workspace when the file lies inside it (so the folder can move), else absolute."""
        check_name_encodable(path)
        p = path.resolve()
        try:
            return p.relative_to(self.folder).as_posix()
        except ValueError:
            return str(p)

    def image_path(self, stored: str) -> Path:
        p = Path(stored)
        return p if p.is_absolute() else self.folder / p

    def any_image_under(self, folder: Path) -> str | None:
        """The stored path of one image (of any project) whose file lies in `folder` (resolved), or None.
        Images inside the workspace are stored relative to it; the others absolute and resolved."""
        folder = folder.resolve()
        if self.folder.is_relative_to(folder):
            row = self.db.execute("SELECT path FROM images LIMIT 1").fetchone()
            return row[0] if row else None
        prefix = str(folder).rstrip(os.sep) + os.sep
        row = self.db.execute("SELECT path FROM images WHERE substr(path, 1, ?) = ? LIMIT 1",
                              [len(prefix), prefix]).fetchone()
        return row[0] if row else None

    def add_images(self, project: str, paths: Iterable[str | Path], probe=probe_image) -> AddImagesResult:
        """Add image files (folders are searched). Unreadable files are skipped and named;
        files already in the project are skipped too. All new rows go in one transaction."""
        pid = self.project_id(project)
        infos: list[ImageInfo] = []
        skipped: list[str] = []
        for p in find_images(list(paths)):
            try:
                check_name_encodable(p)
                infos.append(probe(p))
            except ImageError as e:
                skipped.append(str(e))
        return self.insert_images(pid, infos, skipped)

    def insert_images(self, project_id: int, infos: Sequence[ImageInfo],
                      skipped: list[str] | None = None) -> AddImagesResult:
        skipped = list(skipped or [])
        added: list[int] = []
        t = now()
        with self.db.atomic():
            existing = {r[0] for r in self.db.execute("SELECT path FROM images WHERE project_id=?", [project_id])}
            for info in infos:
                stored = self.stored_path(info.path)
                if stored in existing:
                    skipped.append(f"{info.path}: already in the project")
                    continue
                existing.add(stored)
                added.append(self.db["images"].insert({
                    "project_id": project_id, "path": stored, "sha256": info.sha256, "width": info.width,
                    "height": info.height, "added_at": t, "split_bucket": split_bucket(info.sha256),
                    "status": "unlabeled", "status_updated_at": t}).last_pk)
        return AddImagesResult(added, skipped)

    def image(self, image_id: int) -> dict[str, Any]:
        rows = list(self._rows("SELECT * FROM images WHERE id = ?", [image_id]))
        if not rows:
            raise WorkspaceError(f"no image with id {image_id}")
        return dict(rows[0])

    def image_ids(self, project: str, status: str | None = None) -> list[int]:
        pid = self.project_id(project)
        if status is None:
            return [r[0] for r in self.db.execute("SELECT id FROM images WHERE project_id=? ORDER BY id", [pid])]
        return [r[0] for r in self.db.execute(
            "SELECT id FROM images WHERE project_id=? AND status=? ORDER BY id", [pid, status])]

    def set_status(self, image_id: int, status: str) -> None:
        if status not in STATUSES:
            raise WorkspaceError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
        with self.db.atomic():
            self.db.execute("UPDATE images SET status=?, status_updated_at=? WHERE id=?", [status, now(), image_id])

    # --- annotations -----------------------------------------------------------------------
    def add_annotation(self, image_id: int, label_id: int, box: Box, provenance: str = "manual",
                       author: str | None = None, model_id: int | None = None) -> int:
        if provenance not in PROVENANCES:
            raise WorkspaceError(f"unknown provenance {provenance!r} (one of {', '.join(PROVENANCES)})")
        x1, y1, x2, y2 = _check_box(box)
        t = now()
        with self.db.atomic():
            aid = self.db["annotations"].insert({
                "image_id": image_id, "label_id": label_id, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                "provenance": provenance, "author": author or default_author(), "model_id": model_id,
                "created_at": t, "updated_at": t, "deleted_at": None}).last_pk
            self._touch_status(image_id, t)
        return aid

    def update_annotation(self, annotation_id: int, box: Box | None = None, label_id: int | None = None,
                          provenance: str | None = None) -> None:
        changes: dict[str, Any] = {"updated_at": now()}
        if box is not None:
            changes.update(zip(("x1", "y1", "x2", "y2"), _check_box(box)))
        if label_id is not None:
            changes["label_id"] = label_id
        if provenance is not None:
            if provenance not in PROVENANCES:
                raise WorkspaceError(f"unknown provenance {provenance!r}")
            changes["provenance"] = provenance
        with self.db.atomic():
            self.db["annotations"].update(annotation_id, changes)
            self._touch_status(self.annotation(annotation_id)["image_id"], changes["updated_at"])

    def delete_annotation(self, annotation_id: int) -> None:
        """Soft delete: the row stays for undo and audit."""
        with self.db.atomic():
            t = now()
            self.db["annotations"].update(annotation_id, {"deleted_at": t, "updated_at": t})

    def restore_annotation(self, annotation_id: int) -> None:
        """Undo a soft delete; like an added box, it makes an unlabeled image "in progress"."""
        with self.db.atomic():
            t = now()
            self.db["annotations"].update(annotation_id, {"deleted_at": None, "updated_at": t})
            self._touch_status(self.annotation(annotation_id)["image_id"], t)

    def annotation(self, annotation_id: int) -> dict[str, Any]:
        return dict(self.db["annotations"].get(annotation_id))

    def annotations(self, image_id: int, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Annotations of one image with their label name and node."""
        live = "" if include_deleted else "AND a.deleted_at IS NULL"
        return [dict(r) for r in self._rows(
            "SELECT a.*, l.name AS label, n.name AS node FROM annotations a JOIN labels l ON l.id = a.label_id "
            f"JOIN nodes n ON n.id = l.node_id WHERE a.image_id = ? {live} ORDER BY a.id", [image_id])]

    def _touch_status(self, image_id: int, t: str) -> None:
        self.db.execute("UPDATE images SET status='in_progress', status_updated_at=? "
                        "WHERE id=? AND status='unlabeled'", [t, image_id])

    # --- models, predictions, findings ------------------------------------------------------
    def stored_model_path(self, path: str | Path) -> str:
        """A checkpoint folder as stored: relative to the workspace when inside it (a copied or moved
        workspace keeps its models), else absolute; a relative path is taken as relative to the workspace."""
        p = Path(path)
        return p.as_posix() if not p.is_absolute() else self.stored_path(p)

    def model_path(self, model: dict[str, Any] | str) -> Path:
        """The checkpoint folder of a models row (or of a stored path)."""
        return self.image_path(model["path"] if isinstance(model, dict) else model)

    def register_model(self, version: str, path: str | Path, config: dict | None = None,
                       metrics: dict | None = None, sha256: str | None = None) -> int:
        """A new model row. The caller (inference/registry.py) has verified the checkpoint; `sha256` is
        its model.json's hash. A removed row of the same version is replaced (it keeps its id, so the
        annotations that name it keep their provenance)."""
        row = {"version": version, "path": self.stored_model_path(path), "config": json.dumps(config or {}),
               "metrics": json.dumps(metrics or {}), "sha256": sha256, "removed_at": None}
        with self.db.atomic():
            old = self.db.execute("SELECT id, removed_at FROM models WHERE version=?", [version]).fetchone()
            if old and old[1] is None:
                raise WorkspaceError(f"model version {version!r} is already registered")
            if old:
                self.db["models"].update(old[0], row)
                return old[0]
            return self.db["models"].insert({**row, "created_at": now()}).last_pk

    def update_model(self, model_id: int, *, path: str | Path | None = None, sha256: str | None = None) -> None:
        """Re-point a model to a folder holding the same content, or record its hash (verified at load)."""
        changes: dict[str, Any] = {}
        if path is not None:
            changes["path"] = self.stored_model_path(path)
        if sha256 is not None:
            changes["sha256"] = sha256
        if changes:
            with self.db.atomic():
                self.db["models"].update(model_id, changes)

    def models(self, include_removed: bool = False) -> list[dict[str, Any]]:
        """Registered models, oldest first (removed ones too with `include_removed`: provenance lookups)."""
        where = "" if include_removed else " WHERE removed_at IS NULL"
        return [dict(r) for r in self._rows(f"SELECT * FROM models{where} ORDER BY id")]

    def model(self, version: str, include_removed: bool = False) -> dict[str, Any] | None:
        rows = list(self._rows("SELECT * FROM models WHERE version=?", [version]))
        return dict(rows[0]) if rows and (include_removed or rows[0]["removed_at"] is None) else None

    def latest_model(self) -> dict[str, Any] | None:
        rows = self.models()
        return rows[-1] if rows else None

    def model_usage(self, model_id: int) -> dict[str, int]:
        """What refers to a model: its cached predictions (and the images they cover), annotations made
        from its pre-labels, lint findings (open / answered) and linted images."""
        def one(sql: str) -> int:
            return self.db.execute(sql, [model_id]).fetchone()[0]

        return {"predictions": one("SELECT COUNT(*) FROM predictions WHERE model_id=?"),
                "predicted_images": one("SELECT COUNT(*) FROM predicted_images WHERE model_id=?"),
                "annotations": one("SELECT COUNT(*) FROM annotations WHERE model_id=?"),
                "open_findings": one("SELECT COUNT(*) FROM lint_findings WHERE model_id=? AND state='open'"),
                "answered_findings": one("SELECT COUNT(*) FROM lint_findings WHERE model_id=? AND state!='open'"),
                "linted_images": one("SELECT COUNT(*) FROM lint_images WHERE model_id=?")}

    def remove_model(self, version: str) -> dict[str, Any]:
        """Unregister a model version in one transaction; its checkpoint folder is left alone.

        Its cached predictions, open lint findings and lint scores go (they would only be shown again).
        Annotations made from its pre-labels and answered findings stay: while any exist the row is kept,
        marked removed, so they still name the version they came from; otherwise the row is deleted.
        Returns the row and what was removed or kept (`model_usage` counts, `row_kept`)."""
        with self.db.atomic():
            row = self.model(version)
            if row is None:
                known = ", ".join(m["version"] for m in self.models()) or "none"
                raise WorkspaceError(f"no registered model version {version!r} (registered: {known})")
            usage = self.model_usage(row["id"])
            for sql in ("DELETE FROM predictions WHERE model_id=?", "DELETE FROM predicted_images WHERE model_id=?",
                        "DELETE FROM lint_findings WHERE model_id=? AND state='open'",
                        "DELETE FROM lint_images WHERE model_id=?",
                        "DELETE FROM proposal_decisions WHERE model_id=?"):
                self.db.execute(sql, [row["id"]])
            kept = bool(usage["annotations"] or usage["answered_findings"])
            if kept:
                self.db.execute("UPDATE models SET removed_at=? WHERE id=?", [now(), row["id"]])
            else:
                self.db.execute("DELETE FROM models WHERE id=?", [row["id"]])
        return {"model": row, **usage, "row_kept": kept}

    def save_predictions(self, image_id: int, model_id: int,
                         detections: Iterable[tuple[str, Box, float]]) -> None:
        """Replace one image's predictions by one model (node name, box, score), in one transaction."""
        nodes = self.node_ids()
        with self.db.atomic():
            self.db.execute("DELETE FROM predictions WHERE image_id=? AND model_id=?", [image_id, model_id])
            self.db["predictions"].insert_all(
                {"image_id": image_id, "model_id": model_id, "node_id": nodes[node], "x1": b[0], "y1": b[1],
                 "x2": b[2], "y2": b[3], "score": float(s)} for node, b, s in detections)
            self.db["predicted_images"].upsert({"image_id": image_id, "model_id": model_id, "created_at": now()},
                                               pk=("image_id", "model_id"))

    def predictions(self, image_id: int, model_id: int) -> list[dict[str, Any]] | None:
        """None when this model has not predicted this image yet; else its detections, best first."""
        done = self.db.execute("SELECT 1 FROM predicted_images WHERE image_id=? AND model_id=?",
                               [image_id, model_id]).fetchone()
        if not done:
            return None
        return [dict(r) for r in self._rows(
            "SELECT p.*, n.name AS node FROM predictions p JOIN nodes n ON n.id = p.node_id "
            "WHERE p.image_id=? AND p.model_id=? ORDER BY p.score DESC", [image_id, model_id])]

    # --- pre-label decisions -----------------------------------------------------------------
    def add_proposal_decisions(self, image_id: int, model_id: int, detections: Iterable[tuple[str, Box]],
                               decision: str, author: str | None = None) -> list[int]:
        """Record what the annotator did with these detections (node, box as the model gave them) of one
        image by one model version; returns the new rows' ids (undo removes them)."""
        if decision not in PROPOSAL_DECISIONS:
            raise WorkspaceError(f"unknown decision {decision!r} (one of {', '.join(PROPOSAL_DECISIONS)})")
        nodes, t, ids = self.node_ids(), now(), []
        with self.db.atomic():
            for node, box in detections:
                if node not in nodes:
                    raise WorkspaceError(f"unknown super-taxonomy node {node!r}")
                x1, y1, x2, y2 = (float(v) for v in box)
                ids.append(self.db["proposal_decisions"].insert({
                    "image_id": image_id, "model_id": model_id, "node_id": nodes[node], "x1": x1, "y1": y1,
                    "x2": x2, "y2": y2, "decision": decision, "author": author or default_author(),
                    "created_at": t}).last_pk)
        return ids

    def remove_proposal_decisions(self, decision_ids: Iterable[int]) -> None:
        with self.db.atomic():
            for did in decision_ids:
                self.db.execute("DELETE FROM proposal_decisions WHERE id=?", [did])

    def proposal_decisions(self, image_id: int, model_id: int) -> list[dict[str, Any]]:
        """The decisions on one image's proposals by one model version: node, x1..y2, decision."""
        return list(self._rows(
            "SELECT d.*, n.name AS node FROM proposal_decisions d JOIN nodes n ON n.id = d.node_id "
            "WHERE d.image_id=? AND d.model_id=? ORDER BY d.id", [image_id, model_id]))

    # --- reading ---------------------------------------------------------------------------
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        cur = self.db.execute(sql, list(params))
        cols = [c[0] for c in cur.description]
        for row in cur:
            yield dict(zip(cols, row))

    def stats(self) -> dict[str, Any]:
        sup = self.super_taxonomy()
        out = []
        for name in self.project_names():
            pid = self.project_id(name)
            view = self.project_view(name)
            counts = dict(self.db.execute("SELECT status, COUNT(*) FROM images WHERE project_id=? GROUP BY status",
                                          [pid]).fetchall())
            n_ann = self.db.execute(
                "SELECT COUNT(*) FROM annotations a JOIN images i ON i.id = a.image_id "
                "WHERE i.project_id=? AND a.deleted_at IS NULL", [pid]).fetchone()[0]
            out.append({
                "name": name, "images": sum(counts.values()), "annotations": n_ann,
                "status": {s: counts.get(s, 0) for s in STATUSES},
                "labels": [lab.name for lab in view.taxonomy.labels],
                "label_nodes": {lab.name: lab.node for lab in view.taxonomy.labels},
                "labeled_nodes": [n for n in sup.names if n in view.labeled_nodes],
                "missing_nodes": [n for n in sup.names if n not in view.labeled_nodes],
                "rules": view.taxonomy.rules,
            })
        return {"workspace": str(self.folder), "schema_version": self.schema_version,
                "super_taxonomy": sup.to_dict(), "projects": out, "models": len(self.models())}

    # --- bulk import and export (projects/formats) -------------------------------------------
    def bulk_import(self, project_id: int, images: Sequence[dict[str, Any]],
                    annotations: dict[str, Sequence[Any] | Any]) -> list[int]:
        """Insert many images and annotations in one transaction; returns the image ids in `images` order.

        Why: an import of 1,000,000 boxes through `add_annotation` takes many minutes; plain
        `executemany` of tuples takes seconds (sqlite-utils' `insert_all` builds and checks a dict per row,
        several times slower). `images` are dicts with path, sha256, width, height, status and
        optionally added_at and status_updated_at; a path already in the project is reused, and its
        status moves from unlabeled to the given one (never back). `annotations` are columns: "image"
        (indices into `images`), "label_id", "x1", "y1", "x2", "y2", "provenance", "author", "model_id",
        "created_at", "updated_at", "deleted_at", each a list or one value for every row (columns keep the
        per-row Python work to a C-level zip). The caller has checked boxes and labels
        (projects/formats/importer.py does).
        """
        t = now()
        real_dirs: dict[str, str] = {}

        def stored_path(path: str | Path) -> str:  # stored_path() with one realpath per folder, not per file
            p = os.path.abspath(path)
            folder = os.path.dirname(p)
            if folder not in real_dirs:
                real_dirs[folder] = os.path.realpath(folder)
            real = os.path.join(real_dirs[folder], os.path.basename(p))
            if os.path.islink(real):
                return self.stored_path(Path(real))
            return Path(real[len(root):]).as_posix() if real.startswith(root) else real

        root = str(self.folder) + os.sep
        with self.db.atomic():
            stored = [stored_path(im["path"]) for im in images]
            existing = dict(self.db.execute("SELECT path, id FROM images WHERE project_id=?", [project_id]).fetchall())
            rows, seen = [], set(existing)
            for im, path in zip(images, stored):
                status = im.get("status") or "unlabeled"
                if status not in STATUSES:
                    raise WorkspaceError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
                if path in seen:
                    if path in existing and status != "unlabeled":
                        self.db.execute("UPDATE images SET status=?, status_updated_at=? WHERE id=? AND "
                                        "status='unlabeled'", [status, t, existing[path]])
                    continue
                seen.add(path)
                rows.append((project_id, path, im["sha256"], int(im["width"]), int(im["height"]),
                             im.get("added_at") or t, split_bucket(im["sha256"]), status,
                             im.get("status_updated_at") or t))
            self.db.conn.executemany(
                "INSERT INTO images (project_id, path, sha256, width, height, added_at, split_bucket, status, "
                "status_updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            by_path = dict(self.db.execute("SELECT path, id FROM images WHERE project_id=?", [project_id]).fetchall())
            ids = [by_path[p] for p in stored]
            fields = ("label_id", "x1", "y1", "x2", "y2", "provenance", "author", "model_id", "created_at",
                      "updated_at", "deleted_at")
            n = len(annotations["image"])
            columns = [list(map(ids.__getitem__, annotations["image"]))]
            for f in fields:
                v = annotations.get(f)
                if isinstance(v, list | tuple):
                    if len(v) != n:
                        raise WorkspaceError(f"annotation column {f!r} has {len(v)} values for {n} rows")
                    columns.append(v)
                else:
                    columns.append(itertools.repeat(v, n))
            bad = set(annotations["provenance"] if isinstance(annotations["provenance"], list | tuple)
                      else [annotations["provenance"]]) - set(PROVENANCES)
            if n and bad:
                raise WorkspaceError(f"unknown provenance {sorted(bad, key=str)[0]!r} "
                                     f"(one of {', '.join(PROVENANCES)})")
            self.db.conn.executemany(
                "INSERT INTO annotations (image_id, label_id, x1, y1, x2, y2, provenance, author, model_id, "
                "created_at, updated_at, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", zip(*columns))
        return ids

    def project_export_rows(self, project: str, only_submitted: bool = False, include_deleted: bool = False
                            ) -> tuple[list[dict[str, Any]], Iterator[tuple[Any, ...]]]:
        """A project's images (dicts, by id) and its annotations as tuples sorted by image, for exporters.

        Annotation tuples: (image_id, label_id, x1, y1, x2, y2, provenance, author, model version or None,
        created_at, updated_at, deleted_at). One query each instead of one per image (100,000 images).
        """
        pid = self.project_id(project)
        only = " AND i.status = 'submitted'" if only_submitted else ""
        images = [dict(r) for r in self._rows(f"SELECT i.* FROM images i WHERE i.project_id = ?{only} ORDER BY i.id",
                                               [pid])]
        live = "" if include_deleted else " AND a.deleted_at IS NULL"
        cur = self.db.execute(
            "SELECT a.image_id, a.label_id, a.x1, a.y1, a.x2, a.y2, a.provenance, a.author, m.version, "
            "a.created_at, a.updated_at, a.deleted_at FROM annotations a JOIN images i ON i.id = a.image_id "
            f"LEFT JOIN models m ON m.id = a.model_id WHERE i.project_id = ?{only}{live} ORDER BY a.image_id, a.id",
            [pid])
        return images, cur  # a cursor: iterate it, or fetchmany() in chunks

    # --- labeling window queries: counts and pages that stay fast with 100,000 images ----------
    def status_counts(self, project: str) -> dict[str, int]:
        """Images per status in one project, every status present (index images(project_id, status, id))."""
        counts = dict(self.db.execute("SELECT status, COUNT(*) FROM images WHERE project_id=? GROUP BY status",
                                      [self.project_id(project)]).fetchall())
        return {s: counts.get(s, 0) for s in STATUSES}

    def image_rows(self, image_ids: Sequence[int]) -> list[dict[str, Any]]:
        """id, path, status, width and height of these images, in the order given (one page of a list)."""
        ids = [int(i) for i in image_ids]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        found = {r["id"]: r for r in self._rows(
            f"SELECT id, path, status, width, height FROM images WHERE id IN ({marks})", ids)}
        return [found[i] for i in ids if i in found]

    def next_image_with_status(self, project: str, status: str, after_id: int) -> int | None:
        """The first image of `project` with `status` after image `after_id` in id order, wrapping
        around to the start; None when no image has that status."""
        if status not in STATUSES:
            raise WorkspaceError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
        pid = self.project_id(project)
        sql = "SELECT id FROM images WHERE project_id=? AND status=? AND id > ? ORDER BY id LIMIT 1"
        row = self.db.execute(sql, [pid, status, after_id]).fetchone() or \
            self.db.execute(sql, [pid, status, -1]).fetchone()
        return row[0] if row else None

    # --- lint findings, gold images and annotator quality (issue 7) ---------------------------
    def replace_lint_findings(self, image_id: int, model_id: int | None, findings: Sequence[dict[str, Any]],
                              image_score: float) -> list[int]:
        """Replace one image's *open* findings from one model version (None: rules only) and record that the
        image was linted, with its error score, in one transaction. Dismissed and fixed findings stay: they
        are the annotator's answers (inference/lint.py drops new findings that repeat a dismissed one).
        `findings` are dicts with kind, score, box, message and optionally annotation_id, suggested_label."""
        t = now()
        with self.db.atomic():
            self.db.execute("DELETE FROM lint_findings WHERE image_id=? AND model_id IS ? AND state='open'",
                            [image_id, model_id])
            ids = [self.db["lint_findings"].insert({
                "image_id": image_id, "model_id": model_id, "annotation_id": f.get("annotation_id"),
                "kind": f["kind"], "score": float(f["score"]), "x1": f["box"][0], "y1": f["box"][1],
                "x2": f["box"][2], "y2": f["box"][3], "message": f["message"], "state": "open",
                "suggested_label": f.get("suggested_label"), "created_at": t}).last_pk for f in findings]
            self.db.execute("DELETE FROM lint_images WHERE image_id=? AND model_id IS ?", [image_id, model_id])
            self.db["lint_images"].insert({"image_id": image_id, "model_id": model_id, "score": float(image_score),
                                           "findings": len(ids), "created_at": t})
        return ids

    def lint_findings(self, image_id: int, model_id: int | None = None, any_model: bool = True,
                      state: str | None = None) -> list[dict[str, Any]]:
        """An image's findings, worst first: of every model version (default) or of `model_id` only
        (`any_model=False`; None then means the rules-only lint), optionally in one state."""
        sql = "SELECT * FROM lint_findings WHERE image_id=?"
        params: list[Any] = [image_id]
        if not any_model:
            sql, params = sql + " AND model_id IS ?", [*params, model_id]
        if state is not None:
            sql, params = sql + " AND state=?", [*params, state]
        return [dict(r) for r in self._rows(sql + " ORDER BY score DESC, id", params)]

    def set_finding_state(self, finding_id: int, state: str) -> None:
        if state not in FINDING_STATES:
            raise WorkspaceError(f"unknown finding state {state!r} (one of {', '.join(FINDING_STATES)})")
        with self.db.atomic():
            if not self.db.execute("SELECT 1 FROM lint_findings WHERE id=?", [finding_id]).fetchone():
                raise WorkspaceError(f"no lint finding with id {finding_id}")
            self.db.execute("UPDATE lint_findings SET state=? WHERE id=?", [state, finding_id])

    def lint_ranking(self, project: str, model_id: int | None) -> list[dict[str, Any]]:
        """The project's linted images, most likely to hold a mistake first: image_id, path, score, the
        number of findings stored and of those still open."""
        return [dict(r) for r in self._rows(
            "SELECT li.image_id, i.path, li.score, li.findings, (SELECT COUNT(*) FROM lint_findings f "
            "WHERE f.image_id = li.image_id AND f.model_id IS li.model_id AND f.state = 'open') AS open "
            "FROM lint_images li JOIN images i ON i.id = li.image_id "
            "WHERE i.project_id = ? AND li.model_id IS ? ORDER BY li.score DESC, li.image_id",
            [self.project_id(project), model_id])]

    def mark_gold(self, image_id: int, author: str | None = None, requeue: bool = False) -> int:
        """Make the image's live annotations its gold reference (replacing an older one); returns the number
        of reference boxes. With `requeue` the live annotations are soft-deleted and the image goes back to
        unlabeled, so the next annotator labels it blind. One transaction."""
        image = self.image(image_id)
        t = now()
        with self.db.atomic():
            live = self.annotations(image_id)
            self.db.execute("DELETE FROM gold_boxes WHERE image_id=?", [image_id])
            self.db["gold_images"].upsert({"image_id": image_id, "marked_at": t,
                                           "marked_by": author or default_author()}, pk="image_id")
            self.db["gold_boxes"].insert_all({"image_id": image_id, "label_id": a["label_id"], "x1": a["x1"],
                                              "y1": a["y1"], "x2": a["x2"], "y2": a["y2"]} for a in live)
            if requeue:
                self.db.execute("UPDATE annotations SET deleted_at=?, updated_at=? WHERE image_id=? AND "
                                "deleted_at IS NULL", [t, t, image_id])
                if image["status"] != "unlabeled":
                    self.db.execute("UPDATE images SET status='unlabeled', status_updated_at=? WHERE id=?",
                                    [t, image_id])
        return len(live)

    def unmark_gold(self, image_id: int) -> None:
        with self.db.atomic():
            self.db.execute("DELETE FROM gold_boxes WHERE image_id=?", [image_id])
            self.db.execute("DELETE FROM gold_images WHERE image_id=?", [image_id])

    def gold_reference(self, image_id: int) -> list[dict[str, Any]] | None:
        """None when the image is not gold; else its reference boxes with label name and node."""
        if not self.db.execute("SELECT 1 FROM gold_images WHERE image_id=?", [image_id]).fetchone():
            return None
        return [dict(r) for r in self._rows(
            "SELECT g.*, l.name AS label, n.name AS node FROM gold_boxes g JOIN labels l ON l.id = g.label_id "
            "JOIN nodes n ON n.id = l.node_id WHERE g.image_id=? ORDER BY g.id", [image_id])]

    def gold_image_ids(self, project: str) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT g.image_id FROM gold_images g JOIN images i ON i.id = g.image_id WHERE i.project_id=? "
            "ORDER BY g.image_id", [self.project_id(project)])]

    def add_quality_score(self, image_id: int, author: str, precision: float | None, recall: float | None,
                          mean_iou: float | None, tp: int, fp: int, fn: int) -> int:
        image = self.image(image_id)
        with self.db.atomic():
            return self.db["quality_scores"].insert({
                "image_id": image_id, "project_id": image["project_id"], "author": author, "precision": precision,
                "recall": recall, "mean_iou": mean_iou, "tp": int(tp), "fp": int(fp), "fn": int(fn),
                "created_at": now()}).last_pk

    def quality_scores(self, project: str | None = None) -> list[dict[str, Any]]:
        """Every stored gold score (of one project or all), oldest first, with project name and image path."""
        where, params = ("WHERE q.project_id = ?", [self.project_id(project)]) if project else ("", [])
        return [dict(r) for r in self._rows(
            "SELECT q.*, p.name AS project, i.path FROM quality_scores q JOIN projects p ON p.id = q.project_id "
            f"JOIN images i ON i.id = q.image_id {where} ORDER BY q.created_at, q.id", params)]


def check_name_encodable(path: str | Path) -> None:
    """A file name that is not valid UTF-8 (Linux allows any bytes) cannot be stored or shown faithfully:
    refuse it with the name escaped, instead of an encoding traceback deep in SQLite."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise ImageError(f"{shown}: the file name is not valid UTF-8; rename the file") from None


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def _check_box(box: Box) -> Box:
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError) as e:
        raise WorkspaceError(f"a box is four numbers x1, y1, x2, y2, got {box!r}") from e
    if not all(v == v and abs(v) != float("inf") for v in (x1, y1, x2, y2)):
        raise WorkspaceError(f"box has a NaN or infinite coordinate: {box!r}")
    if x2 < x1 or y2 < y1:
        raise WorkspaceError(f"box corners are reversed: {box!r}")
    return x1, y1, x2, y2

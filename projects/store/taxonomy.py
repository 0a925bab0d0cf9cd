"""Super-taxonomy nodes, projects and their labels (customer taxonomies)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from projects.errors import WorkspaceError
from projects.store.common import StoreBase, now
from projects.taxonomy import PALETTE, CustomerTaxonomy, Label, Node, ProjectView, SuperTaxonomy


class TaxonomyStore(StoreBase):
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


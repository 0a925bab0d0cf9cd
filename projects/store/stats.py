"""What each project holds: `labeler stats`."""

from __future__ import annotations

from typing import Any

from projects.schema import STATUSES
from projects.store.common import StoreBase
from projects.store.target import display


class StatsStore(StoreBase):
    location: str
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
        return {"workspace": display(self.location), "schema_version": self.schema_version,
                "super_taxonomy": sup.to_dict(), "projects": out, "models": len(self.models())}


"""Registered models, their cached predictions and what the annotator decided about their pre-labels."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from projects.errors import WorkspaceError
from projects.schema import PROPOSAL_DECISIONS
from projects.store.common import StoreBase, default_author, now
from projects.values import Box


class ModelStore(StoreBase):
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


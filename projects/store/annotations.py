"""Annotations: boxes an annotator (or an accepted pre-label, or an import) put on an image."""

from __future__ import annotations

from typing import Any

from projects.errors import WorkspaceError
from projects.schema import PROVENANCES
from projects.store.common import StoreBase, check_box, default_author, now
from projects.values import Box


class AnnotationStore(StoreBase):
    # --- annotations -----------------------------------------------------------------------
    def add_annotation(self, image_id: int, label_id: int, box: Box, provenance: str = "manual",
                       author: str | None = None, model_id: int | None = None) -> int:
        if provenance not in PROVENANCES:
            raise WorkspaceError(f"unknown provenance {provenance!r} (one of {', '.join(PROVENANCES)})")
        x1, y1, x2, y2 = check_box(box)
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
            changes.update(zip(("x1", "y1", "x2", "y2"), check_box(box)))
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


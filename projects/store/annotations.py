"""Annotations: boxes an annotator (or an accepted pre-label, or an import) put on an image."""

from __future__ import annotations

from typing import Any

from projects.errors import StaleEditError, WorkspaceError
from projects.schema import PROVENANCES
from projects.store.common import StoreBase, check_box, default_author, now
from projects.values import Box


class AnnotationStore(StoreBase):
    """Edits take row locks only (`row_locked()`), not the workspace's write turn: each is an INSERT or one UPDATE
    guarded by the annotation's version, then the image's conditional status UPDATE, so no read-then-write can see
    another writer's half-way state, and on PostgreSQL annotators' edits commit side by side instead of queueing
    behind one lock (on SQLite `row_locked()` is the same IMMEDIATE transaction as `atomic()`)."""

    # --- annotations -----------------------------------------------------------------------
    def add_annotation(self, image_id: int, label_id: int, box: Box, provenance: str = "manual",
                       author: str | None = None, model_id: int | None = None) -> int:
        if provenance not in PROVENANCES:
            raise WorkspaceError(f"unknown provenance {provenance!r} (one of {', '.join(PROVENANCES)})")
        x1, y1, x2, y2 = check_box(box)
        t = now()
        with self.db.row_locked():
            aid = self.db["annotations"].insert({
                "image_id": image_id, "label_id": label_id, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                "provenance": provenance, "author": author or default_author(), "model_id": model_id,
                "created_at": t, "updated_at": t, "deleted_at": None}).last_pk  # version 1, updated_by NULL: the author
            self._touch_status(image_id, t)
        return aid

    def update_annotation(self, annotation_id: int, box: Box | None = None, label_id: int | None = None,
                          provenance: str | None = None, *, version: int | None = None,
                          user: str | None = None) -> int:
        """Change an annotation; returns its new version. With `version` (the one the edit was made against, as
        the window loaded it) the edit is refused with `StaleEditError` when someone else changed the annotation
        since, and nothing is written; without it (scripts, imports) the edit is applied as given."""
        t = now()
        changes: dict[str, Any] = {"updated_at": t, "updated_by": user or default_author()}
        if box is not None:
            changes.update(zip(("x1", "y1", "x2", "y2"), check_box(box)))
        if label_id is not None:
            changes["label_id"] = label_id
        if provenance is not None:
            if provenance not in PROVENANCES:
                raise WorkspaceError(f"unknown provenance {provenance!r}")
            changes["provenance"] = provenance
        with self.db.row_locked():
            image_id, new_version = self._write_versioned(annotation_id, changes, version)
            self._touch_status(image_id, t)
        return new_version

    def delete_annotation(self, annotation_id: int, *, version: int | None = None, user: str | None = None) -> int:
        """Soft delete: the row stays for undo and audit. Returns the new version (`version`: see update_annotation)."""
        t = now()
        with self.db.row_locked():
            return self._write_versioned(annotation_id, {"deleted_at": t, "updated_at": t,
                                                         "updated_by": user or default_author()}, version)[1]

    def restore_annotation(self, annotation_id: int, *, version: int | None = None, user: str | None = None) -> int:
        """Undo a soft delete; like an added box, it makes an unlabeled image "in progress". Returns the new version."""
        t = now()
        with self.db.row_locked():
            image_id, new_version = self._write_versioned(
                annotation_id, {"deleted_at": None, "updated_at": t, "updated_by": user or default_author()}, version)
            self._touch_status(image_id, t)
        return new_version

    def _write_versioned(self, annotation_id: int, changes: dict[str, Any], version: int | None) -> tuple[int, int]:
        """One UPDATE that bumps the version, guarded by the expected one: (image id, new version). The guard is in
        the statement itself, so two writers racing on one row cannot both pass it on either backend."""
        sets = ", ".join(f"{column} = ?" for column in changes)  # column names are this module's own
        sql, params = f"UPDATE annotations SET {sets}, version = version + 1 WHERE id = ?", [*changes.values(),
                                                                                             annotation_id]
        if version is not None:
            sql, params = sql + " AND version = ?", [*params, int(version)]
        rows = self.db.execute(sql + " RETURNING image_id, version", params).fetchall()
        if not rows:
            raise self._refusal(annotation_id, version)
        return rows[0][0], rows[0][1]

    def _refusal(self, annotation_id: int, version: int | None) -> WorkspaceError:
        row = next(self._rows("SELECT image_id, version, author, updated_by, updated_at, deleted_at FROM annotations "
                              "WHERE id = ?", [annotation_id]), None)
        if row is None:
            return WorkspaceError(f"no annotation with id {annotation_id}")
        what = "deleted" if row["deleted_at"] else "changed"
        return StaleEditError(
            f"annotation {annotation_id} on image {row['image_id']} was {what} by {row['updated_by'] or row['author']} "
            f"at {_when(row['updated_at'])} (now version {row['version']}; this edit was made against version "
            f"{version}): not written, so nothing of theirs is overwritten")

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



def _when(stamp: str | None) -> str:
    """An ISO-8601 UTC stamp as people read it: 2026-12-02 13:04:05 UTC."""
    return f"{stamp[:10]} {stamp[11:19]} UTC" if stamp and len(stamp) >= 19 else str(stamp)

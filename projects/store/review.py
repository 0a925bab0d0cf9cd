"""Lint findings, gold images and annotator quality scores (issue 7)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from projects.errors import WorkspaceError
from projects.schema import FINDING_STATES
from projects.store.common import StoreBase, default_author, now


class ReviewStore(StoreBase):
    # --- lint findings, gold images and annotator quality (issue 7) ---------------------------
    def replace_lint_findings(self, image_id: int, model_id: int | None, findings: Sequence[dict[str, Any]],
                              image_score: float) -> list[int]:
        """Replace one image's *open* findings from one model version (None: rules only) and record that the
        image was linted, with its error score, in one transaction. Dismissed and fixed findings stay: they
        are the annotator's answers (inference/lint.py drops new findings that repeat a dismissed one).
        `findings` are dicts with kind, score, box, message and optionally annotation_id, suggested_label."""
        t = now()
        with self.db.atomic():
            self.db.execute("DELETE FROM lint_findings WHERE image_id=? AND model_id IS NOT DISTINCT FROM ? "
                            "AND state='open'", [image_id, model_id])
            ids = [self.db["lint_findings"].insert({
                "image_id": image_id, "model_id": model_id, "annotation_id": f.get("annotation_id"),
                "kind": f["kind"], "score": float(f["score"]), "x1": f["box"][0], "y1": f["box"][1],
                "x2": f["box"][2], "y2": f["box"][3], "message": f["message"], "state": "open",
                "suggested_label": f.get("suggested_label"), "created_at": t}).last_pk for f in findings]
            self.db.execute("DELETE FROM lint_images WHERE image_id=? AND model_id IS NOT DISTINCT FROM ?",
                            [image_id, model_id])
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
            sql, params = sql + " AND model_id IS NOT DISTINCT FROM ?", [*params, model_id]
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
            "WHERE f.image_id = li.image_id AND f.model_id IS NOT DISTINCT FROM li.model_id "
            "AND f.state = 'open') AS open "
            "FROM lint_images li JOIN images i ON i.id = li.image_id "
            "WHERE i.project_id = ? AND li.model_id IS NOT DISTINCT FROM ? ORDER BY li.score DESC, li.image_id",
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
                self.db.execute("UPDATE annotations SET deleted_at=?, updated_at=?, updated_by=?, "
                                "version = version + 1 WHERE image_id=? AND deleted_at IS NULL",
                                [t, t, author or default_author(), image_id])
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


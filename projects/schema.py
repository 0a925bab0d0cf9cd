"""The workspace schema and its forward migrations.

A migration is a function that takes the database from version N-1 to N; `MIGRATIONS[i]`
produces version i + 1. Never edit a released migration: append a new one. The version lives in
`PRAGMA user_version`, and a `meta` row marks the file as a Labeler workspace so that a random
SQLite file is refused rather than "migrated".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database

APP_ID = "labeler-workspace"

PROVENANCES = ("manual", "prelabel_accepted", "prelabel_adjusted", "refined", "imported")
STATUSES = ("unlabeled", "in_progress", "submitted")


def _v1(db: Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["meta"].insert({"key": "app", "value": APP_ID})
    db["meta"].insert({"key": "super_taxonomy_name", "value": "driving"})
    db["nodes"].create({"id": int, "name": str, "parent_id": int, "position": int}, pk="id",
                       not_null=["name", "position"], foreign_keys=[("parent_id", "nodes", "id")])
    db["nodes"].create_index(["name"], unique=True)
    db["projects"].create({"id": int, "name": str, "rules": str, "created_at": str}, pk="id",
                          not_null=["name", "created_at"], defaults={"rules": "{}"})
    db["projects"].create_index(["name"], unique=True)
    db["labels"].create({"id": int, "project_id": int, "name": str, "node_id": int, "color": str,
                         "shortcut": str, "position": int}, pk="id",
                        not_null=["project_id", "name", "node_id", "position"],
                        foreign_keys=[("project_id", "projects", "id"), ("node_id", "nodes", "id")])
    db["labels"].create_index(["project_id", "name"], unique=True)
    db["images"].create({"id": int, "project_id": int, "path": str, "sha256": str, "width": int,
                         "height": int, "added_at": str, "split_bucket": int, "status": str,
                         "status_updated_at": str}, pk="id",
                        not_null=["project_id", "path", "sha256", "width", "height", "added_at",
                                  "split_bucket", "status"],
                        defaults={"status": "unlabeled"},
                        foreign_keys=[("project_id", "projects", "id")])
    db["images"].create_index(["project_id", "path"], unique=True)
    db["images"].create_index(["project_id", "status", "id"])
    db["images"].create_index(["sha256"])
    db["models"].create({"id": int, "version": str, "path": str, "config": str, "metrics": str,
                         "created_at": str}, pk="id", not_null=["version", "path", "created_at"],
                        defaults={"config": "{}", "metrics": "{}"})
    db["models"].create_index(["version"], unique=True)
    db["annotations"].create({"id": int, "image_id": int, "label_id": int, "x1": float, "y1": float,
                              "x2": float, "y2": float, "provenance": str, "author": str,
                              "model_id": int, "created_at": str, "updated_at": str, "deleted_at": str},
                             pk="id",
                             not_null=["image_id", "label_id", "x1", "y1", "x2", "y2", "provenance",
                                       "author", "created_at", "updated_at"],
                             foreign_keys=[("image_id", "images", "id"), ("label_id", "labels", "id"),
                                           ("model_id", "models", "id")])
    db.execute("CREATE INDEX idx_annotations_live ON annotations(image_id) WHERE deleted_at IS NULL")
    db["annotations"].create_index(["image_id", "updated_at"])
    db["predictions"].create({"id": int, "image_id": int, "model_id": int, "node_id": int, "x1": float,
                              "y1": float, "x2": float, "y2": float, "score": float}, pk="id",
                             not_null=["image_id", "model_id", "node_id", "x1", "y1", "x2", "y2", "score"],
                             foreign_keys=[("image_id", "images", "id"), ("model_id", "models", "id"),
                                           ("node_id", "nodes", "id")])
    db["predictions"].create_index(["image_id", "model_id"])
    # One row per (image, model) that has been predicted, even when it found nothing, so that an
    # image is never predicted twice by the same model.
    db["predicted_images"].create({"image_id": int, "model_id": int, "created_at": str},
                                  pk=("image_id", "model_id"),
                                  foreign_keys=[("image_id", "images", "id"), ("model_id", "models", "id")])
    db["lint_findings"].create({"id": int, "image_id": int, "model_id": int, "annotation_id": int,
                                "kind": str, "score": float, "x1": float, "y1": float, "x2": float,
                                "y2": float, "message": str, "state": str, "created_at": str}, pk="id",
                               not_null=["image_id", "kind", "score", "message", "state", "created_at"],
                               defaults={"state": "open"},
                               foreign_keys=[("image_id", "images", "id"), ("model_id", "models", "id"),
                                             ("annotation_id", "annotations", "id")])
    db["lint_findings"].create_index(["image_id", "state"])


FINDING_STATES = ("open", "dismissed", "fixed")  # a lint finding: not yet seen, the annotator says fine, fixed


def _v2(db: Database) -> None:
    """Lint bookkeeping, gold images and annotator quality scores (issue 7).

    * `lint_findings.suggested_label`: the label the model proposes (wrong class, missed object), so a
      "fix" needs no guesswork from the message text.
    * `lint_images`: one row per image and model version that was linted, even with no finding, with the
      image's error score (the chance it holds at least one mistake) that `labeler lint` ranks by.
      The model is NULL for a rules-only lint, hence the expression index instead of a primary key.
    * `gold_images` + `gold_boxes`: the reference annotations of a gold image, a snapshot kept apart from
      the image's live annotations, which an annotator redoes.
    * `quality_scores`: one row per submitted gold image and annotator: precision, recall and mean IoU at
      IoU 0.5 against the reference (NULL where undefined, e.g. precision with no box drawn).
    """
    db["lint_findings"].add_column("suggested_label", str)
    db["lint_images"].create({"id": int, "image_id": int, "model_id": int, "score": float, "findings": int,
                              "created_at": str}, pk="id", not_null=["image_id", "score", "findings", "created_at"],
                             foreign_keys=[("image_id", "images", "id"), ("model_id", "models", "id")])
    db.execute("CREATE UNIQUE INDEX idx_lint_images_key ON lint_images(image_id, IFNULL(model_id, 0))")
    db["lint_findings"].create_index(["image_id", "model_id"])
    db["gold_images"].create({"image_id": int, "marked_at": str, "marked_by": str}, pk="image_id",
                             not_null=["marked_at"], foreign_keys=[("image_id", "images", "id")])
    db["gold_boxes"].create({"id": int, "image_id": int, "label_id": int, "x1": float, "y1": float, "x2": float,
                             "y2": float}, pk="id", not_null=["image_id", "label_id", "x1", "y1", "x2", "y2"],
                            foreign_keys=[("image_id", "gold_images", "image_id"), ("label_id", "labels", "id")])
    db["gold_boxes"].create_index(["image_id"])
    db["quality_scores"].create({"id": int, "image_id": int, "project_id": int, "author": str, "precision": float,
                                 "recall": float, "mean_iou": float, "tp": int, "fp": int, "fn": int,
                                 "created_at": str}, pk="id",
                                not_null=["image_id", "project_id", "author", "tp", "fp", "fn", "created_at"],
                                foreign_keys=[("image_id", "images", "id"), ("project_id", "projects", "id")])
    db["quality_scores"].create_index(["project_id", "author", "created_at"])


def _v3(db: Database) -> None:
    """Models identified by content, stored relative to the workspace, and removable (issue 10).

    * `models.sha256`: the SHA-256 of the checkpoint's model.json as verified at registration. It pins the
      weights' hash too, so a copy whose files changed under the same `version` is told apart (NULL for a
      row registered before this: verified when it is next loaded).
    * `models.removed_at`: `labeler models remove` keeps the row when annotations (or answered lint
      findings) name it, so their provenance still says which model version they came from; a removed
      model is never picked to predict.
    * A model path inside the workspace folder becomes relative to it, as image paths are, so a copied or
      moved workspace keeps its models.
    """
    db["models"].add_column("sha256", str)
    db["models"].add_column("removed_at", str)
    row = next((r for r in db.execute("PRAGMA database_list").fetchall() if r[1] == "main"), None)
    if not row or not row[2]:
        return
    folder = Path(row[2]).resolve().parent
    for mid, path in db.execute("SELECT id, path FROM models").fetchall():
        p = Path(path)
        if p.is_absolute() and p.resolve().is_relative_to(folder):
            db.execute("UPDATE models SET path=? WHERE id=?", [p.resolve().relative_to(folder).as_posix(), mid])


def _v4(db: Database) -> None:
    """Hierarchical decoding (inference/decoding.py) changed what a model version predicts: a node no longer
    outscores its ancestors and untrained nodes emit nothing. Cached predictions made before are dropped
    (they are a cache: the worker predicts each image again when it is next shown)."""
    db.execute("DELETE FROM predictions")
    db.execute("DELETE FROM predicted_images")


TRAINER_STATES = ("starting", "training", "evaluating", "waiting", "stopping", "stopped", "failed")


def _v5(db: Database) -> None:
    """Continuous training (issue 11): the follow trainer's status row and its checkpoint log.

    * `trainer_runs`: one row per `labeler train --follow` run, updated by the trainer (a heartbeat every few
      seconds: state, steps, loss, images in the stream) and read by the window's status bar. The window asks
      a run to stop by setting `stop_requested_at`; the trainer, wherever it runs, polls it and stops cleanly.
    * `training_checkpoints`: every checkpoint the trainer evaluated, whether it was registered or not: its
      figure and the current model's on the same frozen set (the gate), per-cohort figures, the decision.
    Model ids are plain integers here, not foreign keys: `labeler models remove` must stay possible.
    """
    db["trainer_runs"].create({
        "id": int, "out": str, "host": str, "pid": int, "state": str, "config": str, "started_at": str,
        "updated_at": str, "ended_at": str, "steps": int, "images_seen": int, "pool_images": int,
        "new_images": int, "loss": float, "images_per_s": float, "checkpoints": int, "registered": int,
        "model_id": int, "message": str, "stop_requested_at": str}, pk="id",
        not_null=["out", "state", "started_at", "updated_at"],
        defaults={"config": "{}", "steps": 0, "images_seen": 0, "pool_images": 0, "new_images": 0,
                  "checkpoints": 0, "registered": 0})
    db["training_checkpoints"].create({
        "id": int, "run_id": int, "created_at": str, "version": str, "steps": int, "images_seen": int,
        "pool_images": int, "loss": float, "seconds": float, "eval_images": int, "metric": str,
        "candidate": float, "incumbent": float, "incumbent_model_id": int, "registered_model_id": int,
        "decision": str, "figures": str}, pk="id", not_null=["run_id", "created_at", "decision"],
        defaults={"figures": "{}"}, foreign_keys=[("run_id", "trainer_runs", "id")])
    db["training_checkpoints"].create_index(["run_id", "id"])


PROPOSAL_DECISIONS = ("accepted", "adjusted", "rejected")  # what the annotator did with a pre-label


def _v6(db: Database) -> None:
    """Pre-label decisions (issue 14): a proposal accepted, adjusted or rejected stays answered when the
    workspace is opened again, for the model version that proposed it (a newer model may propose again).

    `proposal_decisions` holds the detection as the model gave it (node and box, as in `predictions`), so
    it is matched to that model's cached detections of the image. Idempotent (`if_not_exists`): a file whose
    user_version was set back re-runs it harmlessly.
    """
    db["proposal_decisions"].create({
        "id": int, "image_id": int, "model_id": int, "node_id": int, "x1": float, "y1": float, "x2": float,
        "y2": float, "decision": str, "author": str, "created_at": str}, pk="id",
        not_null=["image_id", "model_id", "node_id", "x1", "y1", "x2", "y2", "decision", "created_at"],
        foreign_keys=[("image_id", "images", "id"), ("model_id", "models", "id"), ("node_id", "nodes", "id")],
        if_not_exists=True)
    db["proposal_decisions"].create_index(["image_id", "model_id"], if_not_exists=True)


def _v7(db: Database) -> None:
    """Team mode (issue 13): leases of images to annotators, annotation versions, who submitted, gold share.

    * `annotations.version`: 1 when added, bumped by every update, delete and restore. An edit that names the
      version it was made against is refused (`StaleEditError`) when another edit came in between: two annotators
      never overwrite each other's boxes silently. `updated_by`: who made the last change (NULL: the author).
    * `images.submitted_by`: the annotator who submitted the image (a team's progress: submitted today).
    * `projects.gold_share`: the share of claimed images that are gold images (0: none are served).
    * `leases`: one row per image that was ever claimed: who holds it, until when (`expires_at`, seconds since
      the epoch on the database's clock, so annotators' machines need not agree on the time), and when it was
      released. A lease is live while `released_at IS NULL AND expires_at > now`; an expired one is free again.
    """
    for statement in (
        "ALTER TABLE annotations ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE annotations ADD COLUMN updated_by TEXT",
        "ALTER TABLE images ADD COLUMN submitted_by TEXT",
        "ALTER TABLE projects ADD COLUMN gold_share REAL NOT NULL DEFAULT 0",
        "CREATE TABLE IF NOT EXISTS leases (image_id INTEGER PRIMARY KEY REFERENCES images(id), "
        "project_id INTEGER NOT NULL REFERENCES projects(id), holder TEXT NOT NULL, gold INTEGER NOT NULL DEFAULT 0, "
        "claimed_at TEXT NOT NULL, expires_at REAL NOT NULL, released_at TEXT)",
        "CREATE INDEX IF NOT EXISTS idx_leases_live ON leases (project_id, expires_at) WHERE released_at IS NULL",
        "CREATE INDEX IF NOT EXISTS idx_images_project_id_status_status_updated_at "
        "ON images (project_id, status, status_updated_at)",
    ):
        db.execute(statement)


MIGRATIONS: list[Callable[[Database], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7]
SCHEMA_VERSION = len(MIGRATIONS)

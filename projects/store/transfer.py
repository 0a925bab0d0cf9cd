"""Bulk import and export rows (projects/formats): one transaction, one query each, 100,000 images."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from projects.errors import WorkspaceError
from projects.schema import PROVENANCES, STATUSES
from projects.split import split_bucket
from projects.store.common import StoreBase, now


class TransferStore(StoreBase):
    is_team: bool
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
                return self.stored_image_path(Path(real))
            if real.startswith(root):
                return Path(real[len(root):]).as_posix()
            if self.is_team:
                raise WorkspaceError(f"{path}: outside the image root {self.folder}; a team workspace's images lie "
                                     "under it, where every annotator reaches them")
            return real

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
            self.db.executemany(
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
            self.db.executemany(
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


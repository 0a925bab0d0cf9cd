"""Images: where their files are, adding them, their status, and the pages the labeling window reads."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from projects.errors import WorkspaceError
from projects.imaging import ImageError, ImageInfo, file_sha256, find_images, probe_image
from projects.schema import STATUSES
from projects.split import split_bucket
from projects.store.common import StoreBase, check_name_encodable, now


@dataclass(frozen=True)
class AddImagesResult:
    added: list[int]
    skipped: list[str]  # one reason per file, naming it


class ImageStore(StoreBase):
    is_team: bool
    # --- images ----------------------------------------------------------------------------
    def stored_path(self, path: Path) -> str:
        """Relative to the workspace when the file lies inside it (so the folder can move), else absolute.
        On a team workspace `folder` is the image root: paths under it are stored relative to it."""
        check_name_encodable(path)
        p = path.resolve()
        try:
            return p.relative_to(self.folder).as_posix()
        except ValueError:
            return str(p)

    def stored_image_path(self, path: Path) -> str:
        """`stored_path` of an image about to be added. A team workspace refuses one outside its image root:
        another annotator's machine could not read it."""
        stored = self.stored_path(path)
        if self.is_team and Path(stored).is_absolute():
            raise ImageError(f"{path}: outside the image root {self.folder}; a team workspace's images lie under "
                             "it, where every annotator reaches them")
        return stored

    def verify_image(self, image_id: int) -> Path:
        """The image's file, after checking that its content is still what was added (SHA-256): on shared
        storage a file may be replaced or moved under the same name. ImageError naming it if not."""
        row = self.image(image_id)
        path = self.image_path(row["path"])
        if file_sha256(path) != row["sha256"]:
            raise ImageError(f"{path}: the file changed since it was added (its content hash differs); restore "
                             "it or add it again")
        return path

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
                info = probe(p)
                self.stored_image_path(Path(p))  # a team workspace: outside the image root is skipped, named
                infos.append(info)
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
                stored = self.stored_image_path(info.path)
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


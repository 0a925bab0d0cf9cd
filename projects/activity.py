"""What was labelled, when: the store queries behind `labeler drift` (cohorts of submitted images) and
`labeler report` (images and boxes per day, by provenance).

One query each, whatever the number of images, so a report on 100,000 images stays quick. Times are the
store's own UTC ISO strings: an image's **submit time** is `status_updated_at` of a submitted image (the
last status change, i.e. its submission), its **import time** `added_at` (one value per `images add` or
`import` run, which writes all its rows in one transaction with one timestamp).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from projects.workspace import Workspace


def _project_filter(ws: Workspace, projects: Sequence[str] | None, column: str) -> tuple[str, list[Any]]:
    if not projects:
        return "", []
    ids = [ws.project_id(p) for p in projects]  # WorkspaceError naming an unknown project
    return f" AND {column} IN ({','.join('?' * len(ids))})", ids


def submitted_images(ws: Workspace, projects: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every submitted image (of some projects, default all): id, project (name), path, width, height,
    split_bucket, added_at and submitted_at, oldest submission first (ties by id)."""
    where, params = _project_filter(ws, projects, "i.project_id")
    rows = ws.db.execute(
        "SELECT i.id, p.name, i.path, i.width, i.height, i.split_bucket, i.added_at, "
        "COALESCE(i.status_updated_at, i.added_at) AS submitted_at FROM images i "
        f"JOIN projects p ON p.id = i.project_id WHERE i.status = 'submitted'{where} "
        "ORDER BY submitted_at, i.id", params).fetchall()
    keys = ("id", "project", "path", "width", "height", "split_bucket", "added_at", "submitted_at")
    return [dict(zip(keys, r)) for r in rows]


def labelled_per_day(ws: Workspace, projects: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per UTC day on which images were submitted (oldest first): the number of images submitted that day
    and the live boxes on them by provenance (`{"day": "2026-11-03", "images": 12, "boxes": {"manual": 30,
    "prelabel_accepted": 41, ...}}`). How much of the labelling the pre-labels did: accepted vs adjusted vs
    drawn by hand."""
    where, params = _project_filter(ws, projects, "i.project_id")
    day = "substr(COALESCE(i.status_updated_at, i.added_at), 1, 10)"
    images = ws.db.execute(f"SELECT {day} AS day, COUNT(*) FROM images i WHERE i.status = 'submitted'{where} "
                           "GROUP BY day ORDER BY day", params).fetchall()
    boxes = ws.db.execute(
        f"SELECT {day} AS day, a.provenance, COUNT(*) FROM annotations a JOIN images i ON i.id = a.image_id "
        f"WHERE i.status = 'submitted' AND a.deleted_at IS NULL{where} GROUP BY day, a.provenance", params).fetchall()
    out = {d: {"day": d, "images": n, "boxes": {}} for d, n in images}
    for d, provenance, n in boxes:
        out[d]["boxes"][provenance] = n
    return list(out.values())

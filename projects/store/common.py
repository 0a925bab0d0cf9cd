"""What every part of the store shares: the connection, the workspace folder, row reading, and the small
value checks and stamps the parts use."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from projects.errors import WorkspaceError
from projects.imaging import ImageError
from projects.values import Box


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def default_author() -> str:
    try:
        return os.environ.get("LABELER_AUTHOR") or getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


class StoreBase:
    """The state every concern of the store works on; `projects.workspace.Workspace` combines them."""

    folder: Path
    db: Any  # projects.connection.StoreDatabase (SQLite) or projects.store.postgres.PgDatabase

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        cur = self.db.execute(sql, list(params))
        cols = [c[0] for c in cur.description]
        for row in cur:
            yield dict(zip(cols, row))


def check_name_encodable(path: str | Path) -> None:
    """A file name that is not valid UTF-8 (Linux allows any bytes) cannot be stored or shown faithfully:
    refuse it with the name escaped, instead of an encoding traceback deep in SQLite."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise ImageError(f"{shown}: the file name is not valid UTF-8; rename the file") from None


def check_box(box: Box) -> Box:
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError) as e:
        raise WorkspaceError(f"a box is four numbers x1, y1, x2, y2, got {box!r}") from e
    if not all(v == v and abs(v) != float("inf") for v in (x1, y1, x2, y2)):
        raise WorkspaceError(f"box has a NaN or infinite coordinate: {box!r}")
    if x2 < x1 or y2 < y1:
        raise WorkspaceError(f"box corners are reversed: {box!r}")
    return x1, y1, x2, y2

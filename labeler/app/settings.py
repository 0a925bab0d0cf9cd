"""What the app remembers between runs: the last workspace and its project.

A small QSettings INI file in the user's config folder; `LABELER_SETTINGS=/path/file.ini` points it
elsewhere (tests, several profiles). Remembering is a convenience: an unreadable or stale entry is
ignored, never an error.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSettings

from projects.store.target import as_target, is_url, normalize

ENV = "LABELER_SETTINGS"


def settings() -> QSettings:
    path = os.environ.get(ENV)
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "Labeler", "labeler")


def _key(workspace: str | Path) -> str:
    """A folder resolved; a team workspace's URL as it is (it never holds a password: projects/store/target)."""
    return str(normalize(workspace)) if is_url(workspace) else str(Path(workspace).resolve())


def last_workspace() -> str | Path | None:
    value = settings().value("last_workspace")
    return as_target(str(value)) if value else None


def last_project(workspace: str | Path) -> str | None:
    s = settings()
    if str(s.value("last_workspace") or "") != _key(workspace):
        return None
    value = s.value("last_project")
    return str(value) if value else None


def remember(workspace: str | Path, project: str | None = None) -> None:
    s = settings()
    s.setValue("last_workspace", _key(workspace))
    if project is not None:
        s.setValue("last_project", project)
    s.sync()


# --- preferences of the labeling window ------------------------------------------------------------
NEW_IMAGE_ZOOM = ("fit", "keep")  # how the next image opens: fitted to the window, or at the last zoom
THEMES = ("system", "dark", "light")


def preference(key: str, default: str, choices: tuple[str, ...]) -> str:
    """A remembered choice; anything unknown in the file reads as the default."""
    value = str(settings().value(key) or default)
    return value if value in choices else default


def set_preference(key: str, value: str) -> None:
    s = settings()
    s.setValue(key, value)
    s.sync()


def new_image_zoom() -> str:
    return preference("new_image_zoom", "fit", NEW_IMAGE_ZOOM)


def theme() -> str:
    return preference("theme", "system", THEMES)


def hint_seen() -> bool:
    """Whether the first-run hint on the canvas was shown until the first edit (then it is not shown again)."""
    return preference("hint_seen", "no", ("no", "yes")) == "yes"

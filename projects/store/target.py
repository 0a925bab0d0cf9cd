"""Where a workspace lives: a folder (SQLite, `labeler.sqlite` inside) or a PostgreSQL URL.

`postgresql://[user@]host[:port]/dbname` (or `postgres://`) names a team workspace. Credentials come only
through libpq's usual means (PGPASSWORD, ~/.pgpass, a service file): a password in the URL is refused, so it
is never stored (the window remembers the URL) nor printed. `redact()` hides one anyway wherever a URL is
shown, in case it came from somewhere else.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from projects.errors import WorkspaceError

URL_SCHEMES = ("postgresql://", "postgres://")
_USERINFO_PASSWORD = re.compile(r"(://[^:/@?#]*):[^@/?#]*@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


_FOLDED = re.compile(r"(?i)^(postgres(?:ql)?):/(?!/)")


def normalize(target: str | os.PathLike) -> str | os.PathLike:
    """A URL that went through `Path()` on its way here (`postgresql:/host/db`: a Path folds `//`) becomes
    the URL again, so every caller that wraps its workspace argument in a Path still reaches the server;
    anything else is returned unchanged."""
    text = os.fspath(target)
    if isinstance(text, str) and _FOLDED.match(text):
        return _FOLDED.sub(r"\1://", text)
    return text if isinstance(text, str) and is_url(text) else target


def is_url(target: str | os.PathLike | None) -> bool:
    if target is None:
        return False
    text = os.fspath(target)
    return isinstance(text, str) and (text.lower().startswith(URL_SCHEMES) or bool(_FOLDED.match(text)))


def redact(text: str) -> str:
    """`text` with any password in a URL (user:password@ or ?password=) replaced by ***."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1:***@", text))


def check_url(url: str) -> str:
    """The URL, checked: a database name, and no password in it. Returns it unchanged."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError as e:
        raise WorkspaceError(f"{shown}: not a PostgreSQL URL ({e}); use postgresql://[user@]host[:port]/dbname") from e
    if parts.password is not None or any(k.lower() == "password" for k, _ in parse_qsl(parts.query)):
        raise WorkspaceError(f"{shown}: a password in the URL is refused (it would be remembered and shown); "
                             "give it through PGPASSWORD, ~/.pgpass or a service file")
    if not parts.path.strip("/") and "service=" not in parts.query and "dbname=" not in parts.query:
        raise WorkspaceError(f"{shown}: the URL names no database; use postgresql://[user@]host[:port]/dbname")
    return url


def display(target: str | os.PathLike) -> str:
    """How a target is named in messages: a URL redacted, a folder as given."""
    return redact(str(normalize(target))) if is_url(target) else str(target)


def as_target(value: str | os.PathLike) -> str | Path:
    """A command-line workspace argument: a URL stays a string (a Path would fold its `//`), else a Path."""
    return str(normalize(value)) if is_url(value) else Path(value)

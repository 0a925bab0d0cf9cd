"""The workspace store, taxonomies, import/export formats and synthetic scenes (no Qt)."""

import sys as _sys


def _import_sqlite_utils_without_pandas() -> None:
    """sqlite-utils imports pandas whenever it is installed (cleanlab brings it in), only to map
    `pandas.Timestamp` to TEXT, a type the store never writes. That import costs about half a second and
    60 MB at the start of every command and of the window, so pandas is hidden while sqlite-utils is
    first imported (it then runs without it, as it does where pandas is not installed); a later
    `import pandas` (cleanlab, in the linters) works as usual."""
    if "sqlite_utils" in _sys.modules or "pandas" in _sys.modules:
        return
    _sys.modules["pandas"] = None  # type: ignore[assignment]  # makes `import pandas` raise ImportError
    try:
        import sqlite_utils  # noqa: F401
    finally:
        del _sys.modules["pandas"]


_import_sqlite_utils_without_pandas()

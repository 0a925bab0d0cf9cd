"""One exception family for everything Labeler refuses: a caller (the CLI, the window) catches
`LabelerError` and shows its message as one line; anything else is a bug and keeps its traceback.

Each layer keeps its own subclass (WorkspaceError, ImageError, CheckpointError, FormatError…) so
tests and callers can still tell them apart. This module imports nothing, so every layer can use it.
"""

from __future__ import annotations


class LabelerError(Exception):
    """Bad input or a refused operation; the message names the file or object and says what is wrong."""


class WorkspaceError(LabelerError, RuntimeError):
    """The workspace cannot be opened or an edit is invalid; the message says which and why."""


class StaleEditError(WorkspaceError):
    """An edit named the version of an annotation it was made against, and another edit (another annotator, another
    window) has changed it since: refused, so nothing of theirs is overwritten. The message names the annotation,
    its image, who changed it and when."""


class LeaseError(WorkspaceError):
    """A lease of an image to an annotator cannot be taken or kept: another annotator holds the image, or the
    lease ran out and the image went to someone else."""


class PermissionDeniedError(WorkspaceError):
    """The database login may not make this change (a team workspace's annotator role: docs/team.md)."""


class WriteConflictError(WorkspaceError):
    """Two transactions of a team workspace got in each other's way (a deadlock the server broke); nothing of this
    one was written and it can simply run again."""


def shorten(value: object, limit: int = 200) -> str:
    """`repr(value)` cut to `limit` characters, for error messages about untrusted input
    (a YAML alias bomb or a 100 MB string must never be echoed in full)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"

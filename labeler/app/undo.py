"""Undoable edits. Each command's redo() and undo() write exactly one workspace transaction.

There is no Save: the moment a command is pushed, its redo() has committed it. Undo writes the
inverse, also at once. The commands know nothing about widgets; after writing they call
`on_applied(image_id)` so the session can show the image they touched and re-read it from the
database, which stays the source of truth.

The same classes serve every provenance: a drawn box is `AddAnnotation(..., provenance="manual")`,
an accepted proposal `provenance="prelabel_accepted", model_id=...`, a moved proposal
`"prelabel_adjusted"`, and a model-tightened box an `EditAnnotations` with `provenance="refined"`.

Versions: every annotation carries a version the store bumps on each write, and every write here names the version
it expects. A new edit expects the version the window loaded (what the annotator saw); undo and redo expect the
version this window's own last write gave the annotation (`written_versions`, kept per workspace connection, so
the commands of one stack chain: an undo follows the undone nudges, whichever command wrote them). So an edit or
an undo of a box that someone else changed meanwhile — another annotator of a team workspace, another window — is
refused (`StaleEditError`) instead of overwriting theirs; the session then says so and shows the image as it is.

Coordinates: every box these commands write is snapped to whole pixels (`projects.values.snap_box`), so
every path of the window — a drawn box, an accepted model box, a proposal resized on one edge, a nudge,
a lint fix — stores the same kind of numbers. The state an undo puts back is the stored one, as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from weakref import WeakKeyDictionary

from PySide6.QtGui import QUndoCommand

from projects.errors import StaleEditError
from projects.values import Box, snap_box
from projects.workspace import Workspace

Applied = Callable[[int], None]
NUDGE_ID = 1  # consecutive arrow-key nudges of the same boxes merge into one undo step
_WRITTEN: WeakKeyDictionary[Workspace, dict[int, int]] = WeakKeyDictionary()


def written_versions(ws: Workspace) -> dict[int, int]:
    """Annotation id -> the version this window's (this connection's) last write gave it."""
    return _WRITTEN.setdefault(ws, {})


@dataclass(frozen=True)
class AnnotationState:
    """The editable part of an annotation row."""

    box: Box
    label_id: int
    provenance: str

    @classmethod
    def of(cls, row: dict) -> AnnotationState:
        return cls((row["x1"], row["y1"], row["x2"], row["y2"]), row["label_id"], row["provenance"])


class WorkspaceCommand(QUndoCommand):
    """Base of the edits. A step that fails (a locked or read-only database, a bad value) has rolled
    its transaction back, so nothing of it is on disk: the command says so through `on_error`, makes
    itself obsolete (Qt drops it from the stack) and the session re-reads the truth."""

    def __init__(self, ws: Workspace, image_id: int, text: str, on_applied: Applied | None = None):
        super().__init__(text)
        self.ws = ws
        self.image_id = image_id
        self.on_applied = on_applied or (lambda image_id: None)
        self.on_error: Callable[[str], None] = lambda message: None
        self.status_before: str | None = None  # the image's status before this command first wrote

    def redo(self) -> None:
        if self.status_before is None:
            try:
                self.status_before = self.ws.image(self.image_id)["status"]
            except Exception:  # the write below fails the same way and says so
                pass
        self._run(self._redo, "save")

    def undo(self) -> None:
        self._run(self._undo_with_status, "undo")

    def _undo_with_status(self) -> None:
        """Undo, and give the image back the status it had: the first box drawn on an unlabeled image made
        it "in progress"; undoing that box makes it unlabeled again (one transaction for both)."""
        with self.ws.transaction():
            self._undo()
            if self.status_before == "unlabeled" and self.ws.image(self.image_id)["status"] == "in_progress":
                self.ws.set_status(self.image_id, "unlabeled")

    def _run(self, step: Callable[[], None], what: str) -> None:
        try:
            step()
        except StaleEditError as e:  # someone else's edit came first: theirs stays, the image is read again
            self.setObsolete(True)
            self.on_error(f"could not {what} “{self.text()}”: {e}. The image is shown again as it is now.")
        except Exception as e:  # every step is one transaction: a failure changed nothing
            self.setObsolete(True)
            self.on_error(f"could not {what} “{self.text()}”: {e}. Nothing was changed.")
        self.on_applied(self.image_id)

    def _redo(self) -> None:
        raise NotImplementedError

    def _undo(self) -> None:
        raise NotImplementedError


class AddAnnotation(WorkspaceCommand):
    """A new box. Undo soft-deletes the row; redo restores the same row (same id, same history)."""

    def __init__(self, ws: Workspace, image_id: int, label_id: int, box: Box, provenance: str = "manual",
                 model_id: int | None = None, on_applied: Applied | None = None, text: str | None = None):
        super().__init__(ws, image_id, text or f"add box ({provenance})", on_applied)
        self.label_id, self.box, self.provenance, self.model_id = label_id, snap_box(box), provenance, model_id
        self.annotation_id: int | None = None

    def _redo(self) -> None:
        book = written_versions(self.ws)
        if self.annotation_id is None:
            self.annotation_id = self.ws.add_annotation(self.image_id, self.label_id, self.box,
                                                        provenance=self.provenance, model_id=self.model_id)
            book[self.annotation_id] = 1
        else:
            book[self.annotation_id] = self.ws.restore_annotation(self.annotation_id,
                                                                  version=book.get(self.annotation_id))

    def _undo(self) -> None:
        book = written_versions(self.ws)
        book[self.annotation_id] = self.ws.delete_annotation(self.annotation_id, version=book.get(self.annotation_id))


class EditAnnotations(WorkspaceCommand):
    """Change the box, label or provenance of one or more annotations (a move, resize, nudge or class change)."""

    def __init__(self, ws: Workspace, image_id: int, changes: dict[int, tuple[AnnotationState, AnnotationState]],
                 text: str = "edit boxes", on_applied: Applied | None = None, merge_id: int = -1,
                 versions: dict[int, int] | None = None):
        """`versions`: of each annotation as the window loaded it (default: as stored now)."""
        super().__init__(ws, image_id, text, on_applied)
        self.changes = {aid: (before, replace(after, box=snap_box(after.box)))  # id -> (before, after)
                        for aid, (before, after) in changes.items()}
        self.loaded = _versions(ws, self.changes, versions)  # what the first write expects
        self._merge_id = merge_id

    def id(self) -> int:
        return self._merge_id

    def mergeWith(self, other: QUndoCommand) -> bool:
        """Fold a following nudge of the same boxes into this one: one undo undoes the whole slide."""
        if not isinstance(other, EditAnnotations) or other.id() != self.id() or \
                other.image_id != self.image_id or set(other.changes) != set(self.changes):
            return False
        self.changes = {i: (self.changes[i][0], other.changes[i][1]) for i in self.changes}
        return True

    def _write(self, which: int) -> None:
        expected = _expected(self.ws, self.loaded)
        written = {}
        with self.ws.transaction():
            for aid, states in self.changes.items():
                s = states[which]
                written[aid] = self.ws.update_annotation(aid, box=s.box, label_id=s.label_id, provenance=s.provenance,
                                                         version=expected.get(aid))
        written_versions(self.ws).update(written)  # only once all of them are stored
        self.loaded = None

    def _redo(self) -> None:
        self._write(1)

    def _undo(self) -> None:
        self._write(0)


class DeleteAnnotations(WorkspaceCommand):
    """Soft-delete boxes (the rows stay for undo and audit); undo restores them."""

    def __init__(self, ws: Workspace, image_id: int, annotation_ids: list[int], on_applied: Applied | None = None,
                 versions: dict[int, int] | None = None):
        n = len(annotation_ids)
        super().__init__(ws, image_id, f"delete {n} box{'es' if n != 1 else ''}", on_applied)
        self.annotation_ids = list(annotation_ids)
        self.loaded = _versions(ws, self.annotation_ids, versions)  # what the first write expects

    def _write(self, write: Callable[..., int]) -> None:
        expected = _expected(self.ws, self.loaded)
        written = {}
        with self.ws.transaction():
            for aid in self.annotation_ids:
                written[aid] = write(aid, version=expected.get(aid))
        written_versions(self.ws).update(written)
        self.loaded = None

    def _redo(self) -> None:
        self._write(self.ws.delete_annotation)

    def _undo(self) -> None:
        self._write(self.ws.restore_annotation)


class SetStatus(WorkspaceCommand):
    """Mark an image unlabeled / in progress / submitted; undo puts back the status it had."""

    def __init__(self, ws: Workspace, image_id: int, status: str, on_applied: Applied | None = None):
        super().__init__(ws, image_id, f"mark image {status.replace('_', ' ')}", on_applied)
        self.before = ws.image(image_id)["status"]
        self.after = status

    def _redo(self) -> None:
        self.ws.set_status(self.image_id, self.after)

    def _undo(self) -> None:
        self.ws.set_status(self.image_id, self.before)


class AnswerFindings(WorkspaceCommand):
    """Lint findings answered: fixed by `edit` (add the missed box, take the suggested class, move or delete
    the box), or dismissed (no edit). redo() writes the edit and the findings' new state in one
    transaction, undo() puts both back in one, so a finding is open again exactly when its fix is undone.
    `before` maps each finding id to the state it had (open, as a rule)."""

    def __init__(self, ws: Workspace, image_id: int, before: dict[int, str], state: str,
                 edit: WorkspaceCommand | None = None, text: str | None = None, on_applied: Applied | None = None):
        n = len(before)
        default = f"{'fix' if state == 'fixed' else 'dismiss'} {n} lint finding{'s' if n != 1 else ''}"
        super().__init__(ws, image_id, text or default, on_applied)
        self.before, self.state, self.edit = dict(before), state, edit

    def _set_states(self, states: dict[int, str]) -> None:
        live = {f["id"] for f in self.ws.lint_findings(self.image_id)}  # a re-lint may have replaced open ones
        for fid, state in states.items():
            if fid in live:
                self.ws.set_finding_state(fid, state)

    def _redo(self) -> None:
        with self.ws.transaction():
            if self.edit is not None:
                self.edit._redo()
            self._set_states({fid: self.state for fid in self.before})

    def _undo(self) -> None:
        with self.ws.transaction():
            if self.edit is not None:
                self.edit._undo()
            self._set_states(self.before)


class DecideProposals(WorkspaceCommand):
    """Pre-labels answered: accepted or adjusted (with `edits`, the commands that add or change the boxes) or
    rejected (no edit). redo() writes the edits and the decisions in one transaction, undo() removes both in
    one, so a proposal shows again exactly when its acceptance or rejection is undone, and a rejection
    survives reopening the workspace (`Workspace.proposal_decisions`, per model version).
    `detections` are (node, box) as the model gave them."""

    def __init__(self, ws: Workspace, image_id: int, model_id: int | None, detections: Iterable[tuple[str, Box]],
                 decision: str, edits: Iterable[WorkspaceCommand] = (), text: str = "",
                 on_applied: Applied | None = None):
        super().__init__(ws, image_id, text or f"{decision.removesuffix('ed')} pre-label",
                         on_applied)
        self.model_id, self.detections, self.decision = model_id, list(detections), decision
        self.edits = list(edits)
        self.decision_ids: list[int] = []

    def _redo(self) -> None:
        with self.ws.transaction():
            for edit in self.edits:
                edit._redo()
            if self.model_id is not None and self.detections:
                self.decision_ids = self.ws.add_proposal_decisions(self.image_id, self.model_id, self.detections,
                                                                   self.decision)

    def _undo(self) -> None:
        with self.ws.transaction():
            for edit in reversed(self.edits):
                edit._undo()
            self.ws.remove_proposal_decisions(self.decision_ids)
            self.decision_ids = []


def _versions(ws: Workspace, annotation_ids: Iterable[int], given: dict[int, int] | None) -> dict[int, int]:
    """The version each edit is made against: as the window loaded it, else as stored now."""
    given = given or {}
    return {aid: given[aid] if aid in given else ws.annotation(aid)["version"] for aid in annotation_ids}


def _expected(ws: Workspace, loaded: dict[int, int] | None) -> dict[int, int]:
    """The versions a write expects: the loaded ones for a command's first write, else what this window wrote last."""
    return loaded if loaded is not None else written_versions(ws)

"""The labeling session: which project, which images, which image is shown, and the edits on it.

A Qt object without widgets. It reads the workspace for what the window shows and turns every
edit into an undoable command (`labeler.app.undo`) whose redo() writes one transaction. After a
command has written, the session re-reads the image it touched: the window always shows what the
database holds. Each project keeps its own undo stack for the whole session.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoStack

from labeler.app.undo import (
    NUDGE_ID,
    AddAnnotation,
    AnnotationState,
    AnswerFindings,
    DeleteAnnotations,
    EditAnnotations,
    SetStatus,
    WorkspaceCommand,
)
from projects.errors import LabelerError
from projects.queues import ProjectQueue
from projects.values import Box
from projects.workspace import Workspace, WorkspaceError
from widgets.image_list import ImageRow


class LabelingSession(QObject):
    project_changed = Signal()  # labels, queue and undo stack are new
    queue_changed = Signal()  # the list of images (filter) changed
    image_changed = Signal()  # another image is current
    annotations_changed = Signal()  # the current image's boxes were re-read
    image_status_changed = Signal(int, str)  # queue row, new status
    counts_changed = Signal()
    current_label_changed = Signal(int)
    message = Signal(str)  # one line for the status bar
    failed = Signal(str)  # an edit could not be written (nothing of it was): the window must say so

    def __init__(self, ws: Workspace, project: str | None = None, parent: QObject | None = None,
                 resume: bool = False, queue: Callable[[Workspace, str], ProjectQueue] = ProjectQueue):
        """`queue` makes the images of a project the window works through: all of them (default), or the ones
        claimed for one annotator of a team (`projects.queues.ClaimQueue`)."""
        super().__init__(parent)
        self.ws = ws
        self.resume = resume  # a project opens on its first image not submitted (the app), else on its first
        self.make_queue = queue
        self.images: ProjectQueue | None = None
        self.stacks: dict[str, QUndoStack] = {}
        self.project: str = ""
        self.labels: list[dict[str, Any]] = []
        self.label_by_id: dict[int, dict[str, Any]] = {}
        self.current_label_id: int | None = None
        self.status_filter: str | None = None
        self.queue: list[int] = []  # image ids under the filter, ascending
        self.index = -1
        self.image: dict[str, Any] | None = None
        self.annotations: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        names = ws.project_names()
        if not names:
            raise WorkspaceError(f"{ws.folder}: the workspace has no projects; add one with `labeler project add`")
        self.open_project(project or names[0])

    # --- project and queue -------------------------------------------------------------------
    @property
    def undo_stack(self) -> QUndoStack:
        return self.stacks[self.project]

    @property
    def user(self) -> str | None:
        """The annotator whose claimed images this window shows (None: every image of the project)."""
        return self.images.user if self.images is not None else None

    def open_project(self, name: str) -> None:
        self.ws.project_id(name)  # raises naming the known projects
        if self.images is not None and self.project != name:
            self.images.release()
        self.images = self.make_queue(self.ws, name)
        self.project = name
        if name not in self.stacks:
            self.stacks[name] = QUndoStack(self)
        self.labels = self.ws.labels(name)
        self.label_by_id = {lab["id"]: lab for lab in self.labels}
        self.current_label_id = self.labels[0]["id"] if self.labels else None
        self.status_filter = None
        self.counts = self.ws.status_counts(name)
        self.queue = self.images.ids()
        self.index = -1
        self.project_changed.emit()
        self.queue_changed.emit()
        self.counts_changed.emit()
        self.go_to(self.first_open_row() if self.resume else 0)

    def first_open_row(self) -> int:
        """Where a project opens: its first image not submitted yet (unlabeled or in progress), so a day's
        work resumes where it stopped; the first image when every one is submitted."""
        first = self.images.first()
        if first is not None and self.row_of(first) is None:
            self.queue = self.images.ids(self.status_filter)  # claimed just now
        row = self.row_of(first) if first is not None else None
        return row if row is not None else 0

    def set_filter(self, status: str | None) -> None:
        """Show only images with this status (None: all). The list is a snapshot: an image submitted
        while the filter is "unlabeled" stays in it until the filter is chosen again."""
        current = self.image["id"] if self.image else None
        self.status_filter = status
        self.queue = self.images.ids(status)
        self.queue_changed.emit()
        if current is not None and self.row_of(current) is not None:
            self.index = -1
            self.go_to(self.row_of(current))
        else:
            self.index = -1
            self.go_to(0)

    def row_of(self, image_id: int) -> int | None:
        k = bisect.bisect_left(self.queue, image_id)
        return k if k < len(self.queue) and self.queue[k] == image_id else None

    def page(self, offset: int, limit: int) -> list[ImageRow]:
        """Rows for the virtual image list: one query per page of ids."""
        rows = self.ws.image_rows(self.queue[offset:offset + limit])
        return [ImageRow(r["id"], Path(r["path"]).name, r["status"]) for r in rows]

    def image_file(self, image_id: int) -> str:
        return str(self.ws.image_path(self.ws.image(image_id)["path"]))

    def neighbours(self, count: int = 2) -> list[tuple[int, str]]:
        """(id, path) of the next and previous images, nearest first: what to prefetch."""
        rows = []
        for d in range(1, count + 1):
            rows += [self.index + d, self.index - d]
        ids = [self.queue[r] for r in rows if 0 <= r < len(self.queue)]
        return [(r["id"], str(self.ws.image_path(r["path"]))) for r in self.ws.image_rows(ids)]

    # --- navigation --------------------------------------------------------------------------
    def go_to(self, index: int) -> bool:
        if not self.queue:
            self.index, self.image, self.annotations = -1, None, []
            self.image_changed.emit()
            self.annotations_changed.emit()
            return False
        index = max(0, min(index, len(self.queue) - 1))
        if index == self.index:
            return False
        if not self._admitted(self.queue[index]):
            return False
        self.index = index
        self.image = self.ws.image(self.queue[index])
        self.annotations = self.ws.annotations(self.image["id"])
        self.image_changed.emit()
        self.annotations_changed.emit()
        return True

    def _admitted(self, image_id: int) -> bool:
        """The queue lets this image be shown (a team: its lease is renewed or taken again); else it says why and
        the list is read again (the image went to another annotator)."""
        try:
            self.images.admit(image_id)
            return True
        except LabelerError as e:
            self.message.emit(str(e))
            current = self.image["id"] if self.image else None
            self.queue = self.images.ids(self.status_filter)
            self.queue_changed.emit()
            row = self.row_of(current) if current is not None else None
            self.index = row if row is not None else -1
            return False

    def go_to_image(self, image_id: int) -> bool:
        """Show this image, dropping the filter when it hides it."""
        if self.row_of(image_id) is None:
            if not self._admitted(image_id):
                return False
            self.set_filter(None)
        row = self.row_of(image_id)
        return row is not None and (self.go_to(row) or row == self.index)

    def next(self) -> None:
        if self.queue and self.index >= len(self.queue) - 1:
            self.message.emit("this is the last image")
        else:
            self.go_to(self.index + 1)

    def previous(self) -> None:
        if self.queue and self.index <= 0:
            self.message.emit("this is the first image")
        else:
            self.go_to(self.index - 1)

    def next_unlabeled(self) -> None:
        after = self.image["id"] if self.image else -1
        found = self.images.next_open(after, ("unlabeled",))
        if found is None:
            self.message.emit("no unlabeled image left in this project")
        else:
            self.go_to_image(found)

    def submit_and_next(self) -> None:
        """Mark the image submitted (undoable) and go to the next image that is not submitted yet."""
        if not self.image:
            return
        image_id = self.image["id"]
        if self.image["status"] != "submitted":
            self._push(SetStatus(self.ws, image_id, "submitted", self._on_applied))
        found = self.images.next_open(image_id)  # the nearest after, wrapping (a team: the next claimed)
        if found is None:
            self.message.emit("submitted; every image of this project is submitted" if self.user is None else
                              "submitted; no image of this project is left to claim")
            return
        self.go_to_image(found)

    # --- classes -----------------------------------------------------------------------------
    def label_for_shortcut(self, key: str) -> dict[str, Any] | None:
        return next((lab for lab in self.labels if lab["shortcut"] == key), None)

    def set_current_label(self, label_id: int) -> None:
        if label_id not in self.label_by_id:
            raise WorkspaceError(f"label {label_id} is not a label of project {self.project!r}")
        self.current_label_id = label_id
        self.current_label_changed.emit(label_id)

    # --- edits (each one command, one transaction) -------------------------------------------
    def add_box(self, box: Box, label_id: int | None = None, provenance: str = "manual",
                model_id: int | None = None) -> int | None:
        """Add a box to the current image; returns the new annotation id."""
        cmd = self.add_command(box, label_id, provenance, model_id)
        if cmd is None:
            return None
        self._push(cmd)
        return cmd.annotation_id

    def change_boxes(self, boxes: dict[int, Box], provenance: str | None = None, nudge: bool = False) -> None:
        """New boxes for existing annotations (move, resize, nudge); one undo step per gesture."""
        cmd = self.change_command(boxes, provenance, nudge)
        if cmd is not None:
            self._push(cmd)

    def set_label(self, annotation_ids: list[int], label_id: int) -> None:
        cmd = self.label_command(annotation_ids, label_id)
        if cmd is not None:
            self._push(cmd)

    def delete(self, annotation_ids: list[int]) -> None:
        cmd = self.delete_command(annotation_ids)
        if cmd is not None:
            self._push(cmd)

    def answer_findings(self, finding_ids: list[int], state: str, edit: WorkspaceCommand | None = None,
                        text: str | None = None) -> bool:
        """Mark lint findings of the current image fixed or dismissed, with the edit that fixes them: one
        undo step whose redo() writes the edit and the findings' state in one transaction. False when
        nothing was written (no image, or the step failed: `failed` has said why)."""
        if not self.image or not finding_ids:
            return False
        states = {f["id"]: f["state"] for f in self.ws.lint_findings(self.image["id"])}
        before = {fid: states[fid] for fid in finding_ids if fid in states}
        if not before:
            return False
        return self._push(AnswerFindings(self.ws, self.image["id"], before, state, edit, text, self._on_applied))

    # --- the commands behind the edits (built here, pushed alone or inside another command) --------
    def add_command(self, box: Box, label_id: int | None = None, provenance: str = "manual",
                    model_id: int | None = None) -> AddAnnotation | None:
        label_id = label_id if label_id is not None else self.current_label_id
        if not self.image:
            return None
        if label_id is None:
            self.message.emit(f"project {self.project!r} has no labels: add one before drawing boxes")
            return None
        return AddAnnotation(self.ws, self.image["id"], label_id, self._clamped(box), provenance, model_id,
                             self._on_applied)

    def change_command(self, boxes: dict[int, Box], provenance: str | None = None,
                       nudge: bool = False) -> EditAnnotations | None:
        changes = {}
        for aid, box in boxes.items():
            before = self._state(aid)
            after = AnnotationState(self._clamped(box), before.label_id, provenance or before.provenance)
            if after != before:
                changes[aid] = (before, after)
        if not changes or not self.image:
            return None
        text = "nudge" if nudge else ("resize box" if len(changes) == 1 else "move boxes")
        return EditAnnotations(self.ws, self.image["id"], changes, text, self._on_applied,
                               merge_id=NUDGE_ID if nudge else -1, versions=self._versions(changes))

    def label_command(self, annotation_ids: list[int], label_id: int) -> EditAnnotations | None:
        changes = {}
        for aid in annotation_ids:
            before = self._state(aid)
            if before.label_id != label_id:
                changes[aid] = (before, AnnotationState(before.box, label_id, before.provenance))
        if not changes or not self.image:
            return None
        name = self.label_by_id[label_id]["name"]
        return EditAnnotations(self.ws, self.image["id"], changes, f"class → {name}", self._on_applied,
                               versions=self._versions(changes))

    def delete_command(self, annotation_ids: list[int]) -> DeleteAnnotations | None:
        if not annotation_ids or not self.image:
            return None
        return DeleteAnnotations(self.ws, self.image["id"], annotation_ids, self._on_applied,
                                 versions=self._versions(annotation_ids))

    def push(self, cmd: WorkspaceCommand) -> bool:
        """Push an edit built outside the session (pre-label decisions wrapping commands built here): once
        written it re-reads the image it touched, as every edit does; False when its write failed."""
        cmd.on_applied = self._on_applied
        return self._push(cmd)

    def _push(self, cmd: WorkspaceCommand) -> bool:
        """Push (and so run) a command; False when its write failed (nothing of it is stored)."""
        ok = True

        def on_error(message: str) -> None:
            nonlocal ok
            ok = False
            self.failed.emit(message)

        cmd.on_error = on_error
        self.undo_stack.push(cmd)  # a failed command made itself obsolete: Qt has deleted it, do not touch it
        return ok

    def undo(self) -> None:
        if self.undo_stack.canUndo():
            self.message.emit(f"undo: {self.undo_stack.undoText()}")
            self.undo_stack.undo()

    def redo(self) -> None:
        if self.undo_stack.canRedo():
            self.message.emit(f"redo: {self.undo_stack.redoText()}")
            self.undo_stack.redo()

    def _versions(self, annotation_ids) -> dict[int, int]:
        """The versions of these annotations as this window loaded them: an edit is made against them, so one
        that someone else changed meanwhile is refused rather than overwritten."""
        loaded = {a["id"]: a["version"] for a in self.annotations}
        return {aid: loaded[aid] for aid in annotation_ids if aid in loaded}

    def _state(self, annotation_id: int) -> AnnotationState:
        row = next((a for a in self.annotations if a["id"] == annotation_id), None)
        return AnnotationState.of(row if row is not None else self.ws.annotation(annotation_id))

    def _clamped(self, box: Box) -> Box:
        """Boxes never leave the image, whoever proposes them."""
        if not self.image:
            return box
        w, h = float(self.image["width"]), float(self.image["height"])
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = sorted((min(max(x1, 0.0), w), min(max(x2, 0.0), w)))
        y1, y2 = sorted((min(max(y1, 0.0), h), min(max(y2, 0.0), h)))
        return (x1, y1, x2, y2)

    def _on_applied(self, image_id: int) -> None:
        """A command wrote: show its image (undo may reach back to another one) and re-read it."""
        if not self.image or image_id != self.image["id"]:
            self.go_to_image(image_id)
            if self.image and self.image["id"] == image_id:  # its status may have changed too
                self.counts = self.ws.status_counts(self.project)
                self.image_status_changed.emit(self.index, self.image["status"])
                self.counts_changed.emit()
            return
        before = self.image["status"]
        self.image = self.ws.image(image_id)
        self.annotations = self.ws.annotations(image_id)
        self.annotations_changed.emit()
        after = self.image["status"]
        if after != before:
            self.counts[before] -= 1
            self.counts[after] += 1
            self.image_status_changed.emit(self.index, after)
            self.counts_changed.emit()

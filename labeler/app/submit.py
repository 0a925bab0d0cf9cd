"""The window's submit pipeline: ordered checks that may stop a submit, then hooks after it.

Enter (or the toolbar's Submit) runs `SubmitPipeline.submit()`. Each concern of the window registers
a *before_submit* check with an explicit order, the way pytest and pluggy run ordered hook lists:
the checks run lowest order first, and the first one that returns a `Veto` stops the submit (its
reason goes to the status bar). When none vetoes, the image is submitted (one undoable command) and
the *after_submit* hooks run with the submitted image's id (gold scoring).

The order is data, not the order in which controllers happen to be built, so adding a controller can
never reorder or silently replace another's behaviour:

    LEASE (5)       a team: another annotator holds the image now (labeler.app.team)
    SELECTION (10)  a selected pre-label: Enter accepts it instead of submitting (labeler.app.prelabels)
    READABLE (20)   the image's pixels could not be read: never submitted as labelled (labeler.app.main_window)
    LINT (30)       open lint findings: shown for review instead (labeler.app.findings)

Qt-free: a check is a plain callable of the current image row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LEASE, SELECTION, READABLE, LINT = 5, 10, 20, 30


@dataclass(frozen=True)
class Veto:
    """A check stopped the submit. `reason` is one line for the status bar ("" when the check has shown
    its own answer, e.g. the findings dock); `retry` is True when the check will submit again by itself
    once it can decide (the linter still calibrating)."""

    reason: str = ""
    retry: bool = False


Check = Callable[[dict[str, Any]], Veto | None]  # the current image row -> a veto, or None to go on
AfterSubmit = Callable[[int], None]  # the submitted image's id


@dataclass(frozen=True)
class _Entry:
    order: int
    name: str
    fn: Callable[..., Any]


class SubmitPipeline:
    def __init__(self, image: Callable[[], dict[str, Any] | None], submit: Callable[[], None],
                 status: Callable[[int], str]):
        """`image()` is the current image row (None: nothing to submit), `submit()` submits it and moves on,
        `status(image_id)` reads an image's stored status (to tell whether the submit went through)."""
        self._image, self._submit, self._status = image, submit, status
        self._before: list[_Entry] = []
        self._after: list[_Entry] = []
        self.last_veto: tuple[str, Veto] | None = None  # (check name, veto) of the last stopped submit

    def before_submit(self, name: str, order: int, check: Check) -> None:
        """Register a check; `name` is unique (registering twice is a wiring bug, not an override)."""
        self._add(self._before, _Entry(order, name, check))

    def after_submit(self, name: str, order: int, hook: AfterSubmit) -> None:
        self._add(self._after, _Entry(order, name, hook))

    def remove(self, name: str) -> None:
        self._before[:] = [e for e in self._before if e.name != name]
        self._after[:] = [e for e in self._after if e.name != name]

    @staticmethod
    def _add(entries: list[_Entry], entry: _Entry) -> None:
        if any(e.name == entry.name for e in entries):
            raise ValueError(f"submit check {entry.name!r} is registered twice")
        entries.append(entry)
        entries.sort(key=lambda e: (e.order, e.name))

    def checks(self) -> list[str]:
        """The names of the before_submit checks, in the order they run."""
        return [e.name for e in self._before]

    def hooks(self) -> list[str]:
        return [e.name for e in self._after]

    def submit(self) -> Veto | None:
        """Run the checks; submit the image when none vetoes, then the after_submit hooks."""
        image = self._image()
        if image is None:
            return None
        for e in self._before:
            veto = e.fn(image)
            if veto is not None:
                self.last_veto = (e.name, veto)
                return veto
        self.last_veto = None
        image_id = image["id"]
        self._submit()
        if self._status(image_id) == "submitted":
            for e in self._after:
                e.fn(image_id)
        return None

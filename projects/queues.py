"""The images a labeling window works through, Qt-free: every image of the project, or the images claimed for one
annotator of a team (`labeler open WS --user U`).

The window's session (`labeler.app.session`) asks its queue which images to list (under a status filter), where
a project opens, which image comes next after a submit, and whether an image it is asked to show (going back,
an undo reaching back) may be shown. `ProjectQueue` answers as the window always has. `ClaimQueue` answers from
the images this annotator holds: it resumes their live leases (a window that was closed or killed), claims the
next image when they need one (`Workspace.claim`, the same call as `labeler claim`), renews the lease of the image
on screen, re-takes an image they come back to when nobody else took it meanwhile, and gives every lease back
when the window closes.
"""

from __future__ import annotations

from projects.errors import LeaseError
from projects.store.leases import DEFAULT_LEASE_S, check_lease_s, check_user
from projects.workspace import Workspace

OPEN = ("unlabeled", "in_progress")


class ProjectQueue:
    """Every image of the project, in id order (a folder workspace on one desk)."""

    user: str | None = None

    def __init__(self, ws: Workspace, project: str):
        self.ws, self.project = ws, project

    def ids(self, status: str | None = None) -> list[int]:
        return self.ws.image_ids(self.project, status)

    def first(self) -> int | None:
        """Where the project opens: its first image not submitted yet."""
        found = [i for i in (self.ws.next_image_with_status(self.project, s, -1) for s in OPEN) if i is not None]
        return min(found) if found else None

    def next_open(self, after_id: int, statuses: tuple[str, ...] = OPEN) -> int | None:
        """The nearest image after `after_id` (wrapping) with one of `statuses`, other than `after_id` itself."""
        found = [i for i in (self.ws.next_image_with_status(self.project, s, after_id) for s in statuses)
                 if i is not None and i != after_id]
        return min(found, key=lambda i: (i < after_id, i)) if found else None

    def admit(self, image_id: int) -> None:
        """An image may be shown (raises `LabelerError` saying why not)."""

    def keep(self, image_id: int) -> bool:
        """Renew what is needed to keep working on this image; False when it was lost."""
        return True

    def release(self) -> None:
        """The window closes."""


class ClaimQueue(ProjectQueue):
    """The images claimed for `user` in this window, in the order they were claimed."""

    def __init__(self, ws: Workspace, project: str, user: str, lease_s: float = DEFAULT_LEASE_S):
        super().__init__(ws, project)
        self.user, self.lease_s = check_user(user), check_lease_s(lease_s)
        self.held: list[int] = [lease.image_id for lease in ws.leases(project, user)]  # resumed after a restart
        if not self.held:
            self._claim()

    def _claim(self) -> int | None:
        leases = self.ws.claim(self.project, self.user, 1, self.lease_s)
        if not leases:
            return None
        self.held.append(leases[0].image_id)
        return leases[0].image_id

    def ids(self, status: str | None = None) -> list[int]:
        ids = sorted(set(self.held))
        if status is None:
            return ids
        return [r["id"] for r in self.ws.image_rows(ids) if r["status"] == status]

    def _open_held(self, statuses: tuple[str, ...] = OPEN) -> list[int]:
        rows = {r["id"]: r["status"] for r in self.ws.image_rows(self.held)}
        return [i for i in self.held if rows.get(i) in statuses]

    def first(self) -> int | None:
        held = self._open_held()
        return held[0] if held else self._claim()

    def next_open(self, after_id: int, statuses: tuple[str, ...] = OPEN) -> int | None:
        """The next image held and not done, else a newly claimed one (unlabeled first): None when the project has
        none left for anyone."""
        held = [i for i in self._open_held(statuses) if i != after_id]
        later = [i for i in held if self.held.index(i) > self.held.index(after_id)] if after_id in self.held else held
        return (later or held or [None])[0] or self._claim()

    def admit(self, image_id: int) -> None:
        """Going to an image: its lease is renewed, or taken again when it ran out or was given back and nobody took
        it since; `LeaseError` naming the holder when another annotator has it now (it leaves the list)."""
        try:
            self.ws.claim_image(image_id, self.user, self.lease_s)
        except LeaseError:
            self.held = [i for i in self.held if i != image_id]
            raise
        if image_id not in self.held:
            self.held.append(image_id)

    def keep(self, image_id: int) -> bool:
        """The image on screen: renew its lease (one small UPDATE). False when another annotator took it."""
        return bool(self.ws.renew_leases([image_id], self.user, self.lease_s))

    def submitted(self, image_id: int) -> None:
        """After a submit: who submitted it is recorded and its lease given back."""
        self.ws.finish_lease(image_id, self.user)

    def release(self) -> None:
        self.ws.release_leases(self.held, self.user)

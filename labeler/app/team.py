"""The window on a team workspace: `labeler open WS --user U`.

The session's images are the ones claimed for U (`projects.queues.ClaimQueue`, the same claim as `labeler claim`).
This controller keeps that going while the window is open:

- the lease of the image on screen is renewed by a timer, at a third of the lease time (one small UPDATE; a lease
  that was lost — the machine slept past it and another annotator took the image — is said in the status bar);
- a submit is refused while another annotator holds the image (`before_submit`, first of the checks), and once
  submitted the image's lease is given back and its submitter recorded (`after_submit`, after gold scoring);
- closing the window gives back every lease it holds (a killed window's leases run out by themselves);
- the other annotators' progress (per annotator: images submitted today, images held now) is shown in the status
  bar, live: a `projects.team.ProgressWatcher` thread listens on PostgreSQL (LISTEN/NOTIFY) or polls a SQLite
  file, and hands its figures to the GUI thread through a signal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QObject, QTimer, Signal, Slot
from PySide6.QtWidgets import QLabel

from labeler.app.submit import LEASE, Veto
from projects.errors import LabelerError
from projects.queues import ClaimQueue
from projects.team import ProgressWatcher

if TYPE_CHECKING:
    from labeler.app.main_window import MainWindow

RELEASE_ORDER = 200  # after_submit: after gold scoring (labeler.app.findings SUBMIT_ORDER = 100)
POLL_S = {"sqlite": 5.0, "postgresql": 15.0}  # PostgreSQL is told of every change; this catches expiries


class TeamController(QObject):
    _progress = Signal(object)  # rows, emitted from the watcher's thread
    _failed = Signal(str)

    def __init__(self, window: MainWindow, poll_s: float | None = None):
        super().__init__(window)
        self.w = window
        self.session = window.session
        if not isinstance(self.session.images, ClaimQueue):
            raise TypeError("TeamController needs a session on claimed images (open_session(..., user=U))")
        self.queue: ClaimQueue = self.session.images
        self.poll_s = poll_s or POLL_S.get(self.session.ws.db.dialect, 5.0)
        self.label = QLabel()
        self.label.setToolTip("The team on this project: images submitted today / images held now, per annotator")
        window.statusBar().insertPermanentWidget(0, self.label)
        self.renew_timer = QTimer(self)
        self.renew_timer.setInterval(max(1000, int(self.queue.lease_s * 1000 / 3)))
        self.renew_timer.timeout.connect(self.renew)
        self.renew_timer.start()
        self.lost: int | None = None  # the image whose lease another annotator took
        window.submit_pipeline.before_submit("lease held", LEASE, self.check)
        window.submit_pipeline.after_submit("give the lease back", RELEASE_ORDER, self.submitted)
        self._progress.connect(self.show_progress)
        self._failed.connect(lambda text: self.label.setText(f"  team: {text[:80]}  "))
        self.session.project_changed.connect(self._watch)
        self.session.image_changed.connect(self._on_image_changed)
        window.installEventFilter(self)
        self.watcher: ProgressWatcher | None = None
        self._closed = False
        self._watch()

    # --- the lease of the image on screen ------------------------------------------------------------
    def _on_image_changed(self) -> None:
        self.lost = None

    @Slot()
    def renew(self) -> bool:
        """Renew the lease of the image on screen; False (and said) when another annotator took it."""
        img = self.session.image
        if img is None:
            return True
        try:
            kept = self.queue.keep(img["id"])
        except LabelerError as e:  # the server is away for a moment: the next tick tries again
            self.w.statusBar().showMessage(f"could not renew the lease of this image: {e}", 10000)
            return False
        if not kept and self.lost != img["id"]:
            self.lost = img["id"]
            self.w.statusBar().showMessage(
                f"your lease on image {img['id']} ran out and another annotator holds it now: your edits on it are "
                "kept, but it cannot be submitted by you; go to the next image", 30000)
        return kept

    def check(self, image: dict[str, Any]) -> Veto | None:
        """before_submit: an image another annotator holds now is not submitted by this one."""
        try:
            self.session.ws.check_not_held_by_another(image["id"], self.queue.user)
        except LabelerError as e:
            return Veto(str(e))
        return None

    def submitted(self, image_id: int) -> None:
        """after_submit: record who submitted it and give its lease back."""
        self.queue.submitted(image_id)

    # --- the team's progress ---------------------------------------------------------------------------
    def _watch(self) -> None:
        if self.watcher is not None:
            self.watcher.stop(wait_s=0)
        self.watcher = ProgressWatcher(self.session.ws.location, self.session.project, self._emit_progress,
                                       self._emit_failed, poll_s=self.poll_s).start()

    def _emit_progress(self, rows: list[dict[str, Any]]) -> None:
        try:
            self._progress.emit(rows)
        except RuntimeError:  # the window is gone
            pass

    def _emit_failed(self, text: str) -> None:
        try:
            self._failed.emit(text)
        except RuntimeError:
            pass

    @Slot(object)
    def show_progress(self, rows: list[dict[str, Any]]) -> None:
        me = self.queue.user
        parts = [f"{'you' if r['annotator'] == me else r['annotator']} {r['submitted_today']} submitted, "
                 f"{r['claimed_now']} held" for r in rows]
        self.label.setText("  team today: " + (" · ".join(parts) if parts else "nobody has started") + "  ")

    # --- closing -------------------------------------------------------------------------------------------
    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.w and event.type() == QEvent.Type.Close:
            self.shutdown()
        return False

    def shutdown(self) -> None:
        """The window closes: stop renewing and watching, give back every lease it holds."""
        if self._closed:
            return
        self._closed = True
        self.renew_timer.stop()
        if self.watcher is not None:
            self.watcher.stop()
        try:
            self.queue.release()
        except LabelerError as e:  # the server is away: the leases run out by themselves
            self.w.statusBar().showMessage(f"could not give the leases back ({e}); they run out by themselves")

"""Starting the window: which workspace, which project and image, the event loop, screenshots.

Kept apart from the command so tests and benchmarks can open a session without argparse.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

import labeler.app.findings
import labeler.app.prelabels  # noqa: F401  (registers its key bindings before any window is built)
from labeler.app import settings, startup, theme
from labeler.app.main_window import MainWindow
from labeler.app.session import LabelingSession
from labeler.cli import CommandError
from projects.queues import ClaimQueue, ProjectQueue
from projects.store.leases import DEFAULT_LEASE_S
from projects.store.target import as_target, is_url
from projects.workspace import Workspace, WorkspaceError


def resolve_workspace(ws: str | None, ask: bool = True) -> str | Path | None:
    """The folder (or team workspace URL) given; else the last one opened; else (when `ask`) one chosen in a
    folder dialog."""
    if ws:
        return as_target(ws)
    last = settings.last_workspace()
    if last is not None and (is_url(last) or Workspace.db_path(last).is_file()):
        return last
    if not ask:
        raise CommandError("no workspace given and none remembered: run `labeler open WS`")
    while True:
        folder = QFileDialog.getExistingDirectory(None, "Open a Labeler workspace folder")
        if not folder:
            return None
        try:
            Workspace.open(folder).close()
            return Path(folder)
        except WorkspaceError as e:
            QMessageBox.warning(None, "Not a workspace", str(e))


def open_session(folder: str | Path, project: str | None = None, image: int | None = None, user: str | None = None,
                 lease_s: float = DEFAULT_LEASE_S) -> LabelingSession:
    """Open the workspace and a session on `project` (else the last one used here, else the first). With `user`
    the session works through the images claimed for that annotator (`projects.queues.ClaimQueue`)."""
    if user is not None and image is not None:
        raise CommandError("--image picks from every image of the project; with --user the window shows the images "
                           "claimed for you (leave out --image)")
    ws = Workspace.open(folder)
    try:
        names = ws.project_names()
        if project is None:
            remembered = settings.last_project(folder)
            project = remembered if remembered in names else None
        queue = ProjectQueue if user is None else functools.partial(ClaimQueue, user=user, lease_s=lease_s)
        session = LabelingSession(ws, project, resume=True, queue=queue)  # on the first image not submitted yet
        if image is not None:
            n = len(session.queue)
            if not 1 <= image <= n:
                raise CommandError(f"--image {image}: project {session.project!r} has {n} images (use 1..{n})")
            session.go_to(image - 1)
        return session
    except BaseException:
        ws.close()
        raise


def build_window(session: LabelingSession, *, prelabels: bool = True, lint: bool = True,
                 trainer: bool = True, team: bool = True) -> MainWindow:
    """The window and its controllers, each built here by name and set as a typed attribute of the window
    (`window.prelabels`, `window.findings`, `window.trainer`; None when left out). The order they are built in
    changes nothing: the submit pipeline runs its checks by their declared order (`labeler.app.submit`), and no
    controller rewires another's action. The lint check shares the prediction worker's thread; the trainer
    panel (model figures, start/stop of the follow trainer) asks the pre-labels to refresh after a hot swap. A session
    on claimed images (`--user`) gets the team controller: leases renewed and given back, the team's progress."""
    from labeler.app.findings import FindingsController
    from labeler.app.prelabels import PrelabelController
    from labeler.app.team import TeamController
    from labeler.app.trainer_panel import TrainerPanel

    window = MainWindow(session)
    if prelabels:
        window.prelabels = PrelabelController(window)
    if lint:
        window.findings = FindingsController(window, window.prelabels.worker if window.prelabels else None)
    if trainer:
        window.trainer = TrainerPanel(window)
    if team and session.user is not None:
        window.team = TeamController(window)
    return window


def wait_until_shown(window: MainWindow, timeout_s: float) -> bool:
    """Run the event loop until the current image (or its placeholder) is on the canvas."""
    target = window.session.image["id"] if window.session.image else None
    if target is not None and window.ready_image_id != target:
        loop = QEventLoop()
        window.image_ready.connect(loop.quit)
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        loop.exec()
        window.image_ready.disconnect(loop.quit)
    QApplication.processEvents()
    return target is None or window.ready_image_id == target


def screenshot(session: LabelingSession, path: Path, timeout_s: float = 30, size: tuple[int, int] = (1440, 880)
               ) -> Path:
    """Render the window (offscreen when QT_QPA_PLATFORM=offscreen) to `path` once its image is shown."""
    window = build_window(session)
    try:
        theme.for_app().apply(settings.theme())
        window.resize(*size)
        window.show()
        if not wait_until_shown(window, timeout_s):
            raise CommandError(f"{path}: the image did not load within {timeout_s:.0f} s; no screenshot written")
        if window.prelabels is not None:
            window.prelabels.wait_for_current(timeout_s)
        if not window.grab().save(str(path)):
            raise CommandError(f"{path}: cannot write the screenshot (unknown image format or unwritable)")
        return path
    finally:
        window.close()
        session.ws.close()


class _Runner:
    """Holds the open window; Ctrl+O replaces it by a window on another workspace."""

    def __init__(self, session: LabelingSession):
        self.window: MainWindow | None = None
        self._show(session)

    def _show(self, session: LabelingSession) -> None:
        old = self.window
        self.window = build_window(session)
        self.window.workspace_requested.connect(self.switch)
        session.project_changed.connect(lambda: settings.remember(session.ws.location, session.project))
        settings.remember(session.ws.location, session.project)
        theme.for_app().apply(settings.theme())
        self.report = startup.report_to(self.window)
        self.window.show()
        if old is not None:
            old.close()
            old.session.ws.close()

    def switch(self, folder: str) -> None:
        try:
            session = open_session(folder)
        except (WorkspaceError, CommandError) as e:
            QMessageBox.warning(self.window, "Cannot open workspace", str(e))
            return
        self._show(session)


def _excepthook(window_getter):
    def hook(kind, value, tb) -> None:
        traceback.print_exception(kind, value, tb)
        window = window_getter()
        QMessageBox.critical(window, "Labeler error",
                             f"{value}\n\nEvery edit made before this is saved in the workspace.")

    return hook


def run_window(app: QApplication, session: LabelingSession, exit_process: bool = True) -> int:
    """Run the window until it is closed (Ctrl+Q). Every edit was committed when it was made; on the way
    out the workspace is closed and the prediction worker has been asked to stop (it is waited for only
    briefly: `PrelabelController.shutdown`). With `exit_process` the process then ends at once: the
    interpreter's teardown of torch and Qt takes about 2 s here and keeps nothing anyone needs."""
    runner = _Runner(session)
    previous = sys.excepthook
    sys.excepthook = _excepthook(lambda: runner.window)
    try:
        code = app.exec()
    finally:
        sys.excepthook = previous
        if runner.window is not None:
            runner.window.session.ws.close()
        if runner.report is not None:
            runner.report.write("exit")
    if exit_process:
        exit_now(code)
    return code


def exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's teardown (`os._exit`), after flushing what it prints."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said on it
            pass
    os._exit(code)

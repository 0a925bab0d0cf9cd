"""`labeler open WS`: the labeling window. `labeler` alone reopens the last workspace or asks for one.

With `--screenshot FILE.png` the window is rendered offscreen, once its image is shown, into the
file, and the command exits: docs and checks get real pictures of the real window.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from labeler.cli import CommandError, arg, arguments, command

SCREENSHOT_TIMEOUT_S = 30


@command("open", help="open the labeling window on a workspace (no WS: the last one, or choose a folder)")
@arguments(arg("ws", nargs="?", default=None, help="workspace folder (default: the last one opened)"),
           arg("--project", help="project to show first (default: the last one, else the first)"),
           arg("--screenshot", metavar="FILE.png", help="render the window offscreen to this PNG and exit"),
           arg("--image", type=int, metavar="N", help="show the N-th image of the project (1-based)"),
           arg("--user", help="label as this annotator of a team: the window claims your images one by one, renews "
                              "the lease of the one on screen and gives it back on submit or close (docs/team.md)"),
           arg("--lease-minutes", type=float, metavar="M",
               help="with --user: how long a lease lasts unless renewed (default: as `labeler claim`, 15)"))
def open_window(args) -> int:
    if args.screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        target = Path(args.screenshot)
        if not target.parent.exists():
            raise CommandError(f"{target}: folder {target.parent} does not exist")
    elif not _has_display():
        raise CommandError("no display found (DISPLAY is not set): run this on a machine with a screen, use "
                           "`xvfb-run labeler open ...`, or render a picture with --screenshot FILE.png")
    from PySide6.QtWidgets import QApplication

    from labeler.app.window_runner import open_session, resolve_workspace, run_window, screenshot

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Labeler")
    folder = resolve_workspace(args.ws, ask=not args.screenshot)
    if folder is None:
        return 1  # the user cancelled the folder dialog
    from projects.store.leases import DEFAULT_LEASE_S

    if args.user:
        os.environ["LABELER_AUTHOR"] = args.user  # the boxes drawn are theirs (projects.store.common.default_author)
    lease_s = args.lease_minutes * 60 if args.lease_minutes is not None else DEFAULT_LEASE_S
    session = open_session(folder, args.project, args.image, user=args.user, lease_s=lease_s)
    if args.screenshot:
        screenshot(session, Path(args.screenshot), timeout_s=SCREENSHOT_TIMEOUT_S)
        print(f"wrote {args.screenshot}")
        return 0
    return run_window(app, session)


def _has_display() -> bool:
    """Qt aborts the process when it cannot reach a display; say so in one line instead."""
    if os.environ.get("QT_QPA_PLATFORM") or not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))

"""`labeler demo`: build the three-customer demo workspace and open it."""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

from tqdm import tqdm

from labeler.cli import COMMANDS, arg, arguments, command
from projects.demo import build_demo
from projects.taxonomy import resource_path
from projects.workspace import Workspace

DEFAULT_DEMO = Path("demo-workspace")
DEMO_MODEL = resource_path("models", "demo")


def install_demo_model(ws: Workspace) -> str | None:
    """Copy the shipped demo model into the workspace and register it, so pre-labels show at once."""
    if not (DEMO_MODEL / "model.json").exists():
        return None
    from inference.registry import register_checkpoint

    target = ws.folder / "models" / "demo"
    shutil.copytree(DEMO_MODEL, target, dirs_exist_ok=True)
    register_checkpoint(ws, target)
    return ws.latest_model()["version"]


@command("demo", help="build a demo workspace of synthetic driving scenes for three customers, then open it")
@arguments(arg("ws", nargs="?", default=str(DEFAULT_DEMO), help=f"workspace folder (default: {DEFAULT_DEMO})"),
           arg("--no-gui", action="store_true", help="build (or reuse) the workspace and print where it is"),
           arg("--images", type=int, default=90, help="number of images over the three projects"),
           arg("--seed", type=int, default=0))
def demo(args) -> int:
    folder = Path(args.ws)
    if Workspace.db_path(folder).exists():
        Workspace.open(folder).close()  # reuse it (idempotent `make demo`), but only if it is valid
        print(f"reusing demo workspace {folder.resolve()}")
    else:
        t = time.perf_counter()
        with tqdm(total=args.images, desc="demo images", unit="img") as bar:
            ws = build_demo(folder, args.images, args.seed, progress=lambda done, total: bar.update(1))
        try:
            version = install_demo_model(ws)
        finally:
            ws.close()
        print(f"built demo workspace {folder.resolve()} ({args.images} images in {time.perf_counter() - t:.1f} s)"
              + (f" with the shipped model {version}" if version else ""))
    if args.no_gui or "open" not in COMMANDS or importlib.util.find_spec("PySide6") is None:
        print(f"inspect it with: labeler stats {folder}")
        return 0
    from labeler.commands.open import _has_display

    if not _has_display():
        print(f"no display found (DISPLAY is not set): open it on a machine with a screen with "
              f"`labeler open {folder}`, or run `xvfb-run labeler open {folder}`")
        return 0
    import argparse

    return COMMANDS["open"].run(argparse.Namespace(ws=str(folder), project=None, screenshot=None, image=None))

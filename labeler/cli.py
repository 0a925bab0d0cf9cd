"""The `labeler` command line: a registry of subcommands, one small function each.

A command module registers itself with `@command("name", help=...)`; multi-word names
("project add") become nested subcommands. Every module in `labeler.commands` is imported, so a
new command is a new file, not a new branch here.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass

from projects.connection import is_lock_error
from projects.errors import LabelerError


class CommandError(LabelerError, RuntimeError):
    """Bad input to a command: printed as one line, exit status 2."""


# Every refusal is a LabelerError (projects/errors.py); FileNotFoundError comes from argparse-level paths.
EXPECTED_ERRORS = (LabelerError, FileNotFoundError)


@dataclass
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str):
    """Register `run(args)`; its `configure(parser)` is attached as `run.configure` or given later."""

    def wrap(fn):
        COMMANDS[name] = Command(name, help, getattr(fn, "configure", lambda p: None), fn)
        return fn

    return wrap


def arguments(*specs: tuple[tuple, dict]):
    """Attach argparse argument specs to a command function: @arguments((("ws",), {...}), ...)."""

    def wrap(fn):
        def configure(p: argparse.ArgumentParser) -> None:
            for args, kwargs in specs:
                p.add_argument(*args, **kwargs)

        fn.configure = configure
        return fn

    return wrap


def arg(*args, **kwargs) -> tuple[tuple, dict]:
    return args, kwargs


def _load_commands(only: str | None = None) -> None:
    import labeler.commands as pkg

    names = [only] if only else [mod.name for mod in pkgutil.iter_modules(pkg.__path__)]
    for name in names:
        importlib.import_module(f"{pkg.__name__}.{name}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `only` (a module of labeler.commands), of that module's commands."""
    _load_commands(only)
    parser = argparse.ArgumentParser(
        prog="labeler", description="Bounding-box labeling with one detector across every customer taxonomy.")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for name in sorted(COMMANDS):
        cmd = COMMANDS[name]
        words = name.split()
        target = subs
        for depth, word in enumerate(words[:-1]):
            key = " ".join(words[: depth + 1])
            if key not in groups:
                gp = target.add_parser(word, help=f"{word} subcommands")
                groups[key] = gp.add_subparsers(dest=f"sub_{depth}", metavar="SUBCOMMAND", required=True)
            target = groups[key]
        p = target.add_parser(words[-1], help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _quiet_dependency_warnings() -> None:
    """Warnings raised inside third-party packages (torch's `torch.jit.script` FutureWarning, timm's
    deprecations) say nothing a Labeler user can act on; ours (module `labeler`, `projects`…) still show."""
    import warnings

    for module in ("torch", "torchvision", "timm", "effdet", "cleanlab", "sklearn", "pycocotools", "scipy"):
        warnings.filterwarnings("ignore", module=rf"{module}(\..*)?$")


def main(argv: list[str] | None = None) -> int:
    _quiet_dependency_warnings()
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print escaped, never crash a report
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    words = sys.argv[1:] if argv is None else list(argv)
    # `labeler` and `labeler open …` start the window: only the open command is loaded, so the other
    # commands' imports (formats, progress bars, the demo scenes) do not delay the first image
    parser = build_parser("open" if words[:1] in ([], ["open"]) else None)
    args = parser.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)  # `--nproc N` relaunches the same command line
    if not hasattr(args, "_run"):
        default = COMMANDS.get("open")
        if default is None:
            parser.print_help()
            return 0
        args = parser.parse_args(["open", *(argv or [])])
    try:
        return int(args._run(args) or 0)
    except EXPECTED_ERRORS as e:
        print(f"labeler: error: {e}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as e:  # a lock or a damaged page met outside the store's checks: still one line
        if is_lock_error(e):
            print(f"labeler: error: the workspace is busy ({e}); nothing more was written, try again",
                  file=sys.stderr)
        elif "malformed" in str(e) or "not a database" in str(e):
            print(f"labeler: error: the workspace file is damaged ({e}); restore it from a backup", file=sys.stderr)
        else:
            raise
        return 2
    except KeyboardInterrupt:
        print("labeler: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

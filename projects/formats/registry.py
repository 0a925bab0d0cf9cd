"""The format registry: each format is a class in its own module, registered by name.

A new format is a new module in `projects/formats/` with `@register`; nothing else changes
(no if-chain of format names anywhere).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from projects.formats.common import Dataset, ExportData, TransferError


@dataclass
class ReadContext:
    """What a reader may need besides the path: a scratch folder (the archive stages images there)."""

    scratch: Path | None = None
    images_dir: Path | None = None  # --images: formats that list image files (YOLO) look there


class Format:
    name: ClassVar[str]
    description: ClassVar[str]
    keeps_history: ClassVar[bool] = False  # exports deleted annotations and full provenance (the archive)
    writes_file: ClassVar[bool] = False  # OUT is one file rather than a folder

    def read(self, path: Path, ctx: ReadContext) -> Dataset:
        raise NotImplementedError

    def write(self, data: ExportData, out: Path) -> None:
        raise NotImplementedError


FORMATS: dict[str, type[Format]] = {}


def register(cls: type[Format]) -> type[Format]:
    if cls.name in FORMATS and FORMATS[cls.name] is not cls:
        raise RuntimeError(f"format {cls.name!r} registered twice")
    FORMATS[cls.name] = cls
    return cls


def _load_all() -> None:
    import projects.formats as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name not in ("common", "registry", "importer", "exporter"):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")


def format_names() -> list[str]:
    _load_all()
    return sorted(FORMATS)


def get_format(name: str) -> Format:
    _load_all()
    if name not in FORMATS:
        raise TransferError(f"unknown format {name!r} (one of {', '.join(sorted(FORMATS))})")
    return FORMATS[name]()

"""What every format shares: the in-memory dataset, the error types, safe paths and file parsing.

A reader turns another tool's files into a `Dataset` (image entries plus boxes in columns, each box
remembering the file and place it came from); the importer then finds and probes the images, matches
labels and checks boxes, and only then writes. A writer turns an `ExportData` into the tool's files.
Boxes are kept column-wise (`array`) rather than one object each, so a 1,000,000-box COCO file costs
tens of megabytes here, not hundreds.
"""

from __future__ import annotations

import json
import math
import os
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
import numpy as np
from defusedxml import DefusedXmlException

from projects.errors import LabelerError, shorten
from projects.untrusted import read_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".JPG", ".JPEG", ".PNG")


class TransferError(LabelerError, ValueError):
    """An import or export cannot go ahead; the message says which file, where, and why."""


class FormatError(TransferError):
    """A file is not valid in its format: the message names the file and the place (line, element, JSON path)."""

    def __init__(self, source: str | Path, place: str, what: str):
        self.source, self.place, self.what = str(source), place, what
        super().__init__(f"{source}: {place}: {what}" if place else f"{source}: {what}")


@dataclass
class ImageEntry:
    """One image as an annotation file names it; found on disk and probed later by the importer."""

    name: str  # as written in the file: a relative path, a bare file name, a URL
    source: str  # the annotation file that names it
    place: str  # where in that file
    roots: tuple[Path, ...] = ()  # folders to look in (after --images), in order
    width: int | None = None  # as the file states it (None: not stated)
    height: int | None = None
    relative: bool = False  # box coordinates are fractions of the image size (YOLO, Label Studio)
    path: Path | None = None  # already located by the reader (YOLO lists files; the archive stages them)
    extra: dict[str, Any] = field(default_factory=dict)  # archive: sha256, status, timestamps


class Dataset:
    """Images and boxes read from one import source, before anything touches the workspace."""

    def __init__(self, source: str | Path, box_place_format: str = "{}", int_places: bool = False):
        self.source = str(source)
        self.images: list[ImageEntry] = []
        self.labels: list[str] = []  # label names in first-seen order; a box holds an index into it
        self._label_index: dict[str, int] = {}
        self.box_image = array("q")
        self.box_label = array("q")
        self.coords = array("d")  # x1, y1, x2, y2 per box (pixels, or fractions when the image is `relative`)
        # Where each box is in its image's source: strings, or (int_places) numbers that fill box_place_format.
        self.box_place: list[str] | array = array("q") if int_places else []
        self.box_place_format = box_place_format
        self.box_extra: list[dict[str, Any]] | None = None  # archive: provenance, author, timestamps
        self.notes: Counter[str] = Counter()  # what the reader converted or left out, counted
        self.examples: dict[str, list[str]] = {}  # a few places per note
        self.taxonomy: dict[str, Any] | None = None  # archive: the project's labels, nodes and rules

    # --- building ----------------------------------------------------------------------------
    def add_image(self, entry: ImageEntry) -> int:
        self.images.append(entry)
        return len(self.images) - 1

    def label_index(self, name: str) -> int:
        i = self._label_index.get(name)
        if i is None:
            i = self._label_index[name] = len(self.labels)
            self.labels.append(name)
        return i

    def add_box(self, image: int, label: str, x1: float, y1: float, x2: float, y2: float,
                place: str | int, extra: dict[str, Any] | None = None) -> None:
        self.box_image.append(image)
        self.box_label.append(self.label_index(label))
        self.coords.extend((x1, y1, x2, y2))
        self.box_place.append(place)
        if extra is not None:
            if self.box_extra is None:
                self.box_extra = []
            self.box_extra.append(extra)

    def note(self, what: str, where: str, n: int = 1) -> None:
        """Count something the reader converted or dropped (polygons, crowd regions...), keeping a few places."""
        self.notes[what] += n
        ex = self.examples.setdefault(what, [])
        if len(ex) < 5:
            ex.append(where)

    # --- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.box_label)

    def box_array(self) -> np.ndarray:
        return np.frombuffer(self.coords, dtype=np.float64).reshape(-1, 4).copy() if len(self) else \
            np.zeros((0, 4))

    def where(self, k: int) -> str:
        """`file: place` of box k, for messages."""
        place = self.box_place[k]
        if isinstance(place, int):
            place = self.box_place_format.format(place)
        return f"{self.images[self.box_image[k]].source}: {place}"


# --- safe paths ----------------------------------------------------------------------------------
class PathGuard:
    """Joins untrusted relative names onto a folder, refusing any that would leave it.

    Names from imported files are untrusted: a COCO `file_name` of `../../etc/passwd`, a zip entry
    `/home/x/.bashrc` or a symlink inside the data folder pointing elsewhere must never be read or
    written. Both separators count, as Windows tools write `\\`. Resolved folders are cached and the
    work is done on strings, so 100,000 images in one folder cost one `realpath` and one `lstat` each.
    """

    def __init__(self) -> None:
        self._real: dict[str, str] = {}

    def _real_dir(self, d: str) -> str:
        real = self._real.get(d)
        if real is None:
            real = self._real[d] = os.path.realpath(d)
        return real

    def real_dir(self, d: str | Path) -> str:
        """A folder's real path (cached)."""
        return self._real_dir(os.fspath(d))

    def _real_file(self, path: str) -> str:
        real = os.path.join(self._real_dir(os.path.dirname(path)), os.path.basename(path))
        return os.path.realpath(real) if os.path.islink(real) else real

    def join(self, root: Path, name: str, source: str | Path = "", place: str = "") -> Path:
        """`root / name`, or FormatError when the name is absolute, has `..`, or leads outside by a symlink."""
        src = source or root
        if not name or "\x00" in name:
            raise FormatError(src, place, f"empty or invalid path {shorten(name)}")
        posix = name.replace("\\", "/")
        if posix.startswith("/") or _DRIVE.match(posix):
            raise FormatError(src, place, f"absolute path {shorten(name)} is not allowed (paths must be relative)")
        parts = [q for q in posix.split("/") if q and q != "."]
        if ".." in parts:
            raise FormatError(src, place, f"path {shorten(name)} leaves its folder ('..' is not allowed)")
        if not parts:
            raise FormatError(src, place, f"empty or invalid path {shorten(name)}")
        root_s = os.fspath(root)
        path = os.path.join(root_s, *parts)
        try:
            base = self._real_dir(root_s)
            real = self._real_file(path)
        except (OSError, RuntimeError, ValueError) as e:  # symlink loops, names too long
            raise FormatError(src, place, f"path {shorten(name)} cannot be resolved ({e})") from e
        if not real.startswith(base.rstrip(os.sep) + os.sep):
            raise FormatError(src, place, f"path {shorten(name)} leads outside {root} (through a symlink)")
        return Path(path)

    def real(self, path: Path) -> str:
        """A key that is the same for two names of one file (for merging duplicates)."""
        return self._real_file(os.fspath(path))


_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_join(root: Path, name: str, source: str | Path = "", place: str = "") -> Path:
    """`root / name`, refusing names that leave `root` (see PathGuard)."""
    return PathGuard().join(root, name, source, place)


# --- reading annotation files ---------------------------------------------------------------------
_CONFINED: ContextVar[tuple[PathGuard, tuple[Path, ...], frozenset[str]] | None] = \
    ContextVar("labeler_import_confinement", default=None)


@contextmanager
def confined_to(roots: Iterable[Path], named: Iterable[Path] = ()) -> Iterator[None]:
    """While importing: every annotation file read through `read_bytes` (read_text, read_json, parse_xml)
    must, once symlinks are resolved, lie inside the root its path lies in (a file outside every root, such
    as classes.txt one folder up, inside its own folder), unless it is one of the files the user `named`.

    Why here and not in each reader: readers find files by globbing the import folder, and a symlink there
    (`a.json -> /etc/passwd`) would be read and its first line could end up in an error message. One check
    at the single place files are read covers every reader, present and future."""
    named_real = frozenset(os.path.realpath(p) for p in named)
    token = _CONFINED.set((PathGuard(), tuple(Path(r) for r in roots), named_real))
    try:
        yield
    finally:
        _CONFINED.reset(token)


def _check_confined(path: Path) -> None:
    state = _CONFINED.get()
    if state is None:
        return
    guard, roots, named = state
    try:
        real = guard.real(path)
    except (OSError, RuntimeError, ValueError) as e:
        raise FormatError(path, "", f"cannot be resolved ({e})") from e
    if real in named:
        return
    lexical = os.path.abspath(path)
    folder = next((r for r in roots if lexical.startswith(os.path.abspath(r).rstrip(os.sep) + os.sep)), None)
    # A file a reader looks for beside the import folder (classes.txt one folder up) may not leave its own folder.
    base = guard.real_dir(folder if folder is not None else os.path.dirname(lexical))
    if not real.startswith(base.rstrip(os.sep) + os.sep):
        where = folder if folder is not None else os.path.dirname(lexical)
        raise FormatError(path, "", f"a symlink leading outside {where}: not followed")


def read_bytes(path: Path) -> bytes:
    """A regular file's bytes (no FIFO or device: they would hang or never end), confined while importing."""
    _check_confined(path)
    try:
        return read_file(path)
    except OSError as e:
        raise FormatError(path, "", f"cannot read ({e.strerror or e})") from e


# --- parsing helpers -----------------------------------------------------------------------------
def read_text(path: Path) -> str:
    data = read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise FormatError(path, f"line {line}", "not UTF-8 text") from e


def read_json(path: Path) -> Any:
    """Parse a JSON file; errors name the line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(path, f"line {e.lineno} column {e.colno}", f"not valid JSON ({e.msg})") from e
    except RecursionError as e:
        raise FormatError(path, "", "JSON nested too deeply") from e
    except ValueError as e:  # an integer of more than 4300 digits
        raise FormatError(path, "", f"not valid JSON ({str(e).split(':')[0][:120]})") from e


def parse_xml(path: Path) -> Element:
    """Parse XML with defusedxml: no external entities, no entity-expansion bombs, no DTDs."""
    data = read_bytes(path)
    try:
        return SafeET.fromstring(data, forbid_dtd=True)
    except ParseError as e:
        line, col = getattr(e, "position", (0, 0))
        raise FormatError(path, f"line {line} column {col + 1}", f"not well-formed XML ({_xml_reason(e)})") from e
    except DefusedXmlException as e:
        raise FormatError(path, "", f"refused unsafe XML ({type(e).__name__}: DTDs and entities are not allowed)") \
            from e
    except (ValueError, RecursionError) as e:
        raise FormatError(path, "", f"not valid XML ({e})") from e


def _xml_reason(e: ParseError) -> str:
    msg = str(e)
    return msg.split(":")[0] if ":" in msg else msg


def number(value: Any, source: str | Path, place: str) -> float:
    """A JSON/XML/text number as float; NaN and infinity pass (box checks report them), junk does not."""
    if isinstance(value, bool):
        raise FormatError(source, place, f"expected a number, got {shorten(value)}")
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # a JSON integer like 10**400
            raise FormatError(source, place, f"number too large ({_digits(value)})") from None
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise FormatError(source, place, f"expected a number, got {_short(value)}")


def finite_number(value: Any, source: str | Path, place: str) -> float:
    """A number that must be finite (an angle, a stated image size): NaN and infinity are refused here."""
    f = number(value, source, place)
    if not math.isfinite(f):
        raise FormatError(source, place, f"expected a finite number, got {_short(value)}")
    return f


MAX_INTEGER = 2**63 - 1  # what SQLite stores; ids and sizes beyond it are junk, not data


def _digits(value: int) -> str:
    return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"  # str() refuses > 4300 digits


def integer(value: Any, source: str | Path, place: str) -> int:
    """An id or size: an int, or a float/str holding a whole number (some tools write `640.0`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_INTEGER:
            raise FormatError(source, place, f"whole number out of range ({_digits(value)})")
        return value
    try:
        f = number(value, source, place)
    except FormatError:
        raise FormatError(source, place, f"expected a whole number, got {_short(value)}") from None
    if f != f or f in (float("inf"), float("-inf")) or f != int(f):
        raise FormatError(source, place, f"expected a whole number, got {_short(value)}")
    if abs(f) > MAX_INTEGER:
        raise FormatError(source, place, f"whole number out of range, got {_short(value)}")
    return int(f)


def text_of(el: Element, tag: str, source: str | Path, place: str, required: bool = True) -> str | None:
    child = el.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise FormatError(source, f"{place}/{tag}", "missing")
        return None
    return child.text.strip()


def _short(value: Any, n: int = 60) -> str:
    s = repr(value)
    return s if len(s) <= n else s[: n - 3] + "..."


def polygon_box(xs: list[float], ys: list[float]) -> tuple[float, float, float, float]:
    return min(xs), min(ys), max(xs), max(ys)


# --- export --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportLabel:
    name: str
    node: str
    color: str | None
    shortcut: str | None


@dataclass(frozen=True)
class ExportImage:
    id: int
    path: Path  # the file on disk
    name: str  # unique relative name in the export (posix)
    width: int
    height: int
    sha256: str
    status: str
    split: str = "train"  # the stable split of its content hash (projects/split.py)
    added_at: str | None = None
    status_updated_at: str | None = None


@dataclass
class ExportData:
    """One project read out of the workspace for a writer: labels in order, images, boxes by image."""

    project: str
    labels: list[ExportLabel]
    rules: dict[str, Any]
    nodes: list[dict[str, str | None]]  # the super-taxonomy nodes the labels need, parents first
    images: list[ExportImage]
    box_image: np.ndarray  # int index into images, sorted
    box_label: np.ndarray  # int index into labels
    boxes: np.ndarray  # (N, 4) x1, y1, x2, y2 pixels
    box_extra: list[dict[str, Any]] | None = None  # provenance, author, model version, timestamps (archive)
    copy_images: bool = True
    box_provenance: list[str] | None = None  # manual, prelabel_accepted, ... per box
    _starts: np.ndarray | None = None

    def boxes_of(self, i: int) -> range:
        """Indices of image i's boxes (boxes are sorted by image)."""
        if self._starts is None:
            self._starts = np.searchsorted(self.box_image, np.arange(len(self.images) + 1))
        return range(int(self._starts[i]), int(self._starts[i + 1]))


def copy_image(src: Path, dest: Path) -> None:
    """Place an image in an export: a hard link when the file system allows it (instant, no space), else a copy."""
    import os
    import shutil

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        try:
            shutil.copyfile(src, dest)
        except OSError as e:
            raise TransferError(f"{src}: cannot copy image into the export ({e.strerror or e})") from e

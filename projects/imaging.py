"""Reading image files: decode, size and content hash, with errors that name the file.

Qt-free and thread-safe, so the GUI's decoder thread, the importer, the prediction worker and the
trainer share it. Every file is untrusted, so reading is bounded:

* only regular files are read (a FIFO, a device such as /dev/zero, a socket or a folder is refused
  at once, without blocking: the file is opened non-blocking and checked with fstat);
* at most `max_bytes()` bytes (env `LABELER_MAX_IMAGE_BYTES`, default 1 GiB) are read;
* the width and height are read from the header (`projects.image_header`) and checked against
  `max_pixels()` (env `LABELER_MAX_PIXELS`, default 150 megapixels, e.g. 12000 x 12500) *before*
  anything is decoded; a format whose header Labeler cannot read is refused rather than decoded blind;
* any decoder failure (`cv2.error` included) becomes one `ImageError` that names the file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from projects.errors import LabelerError, shorten
from projects.image_header import FORMATS, HeaderError, image_size
from projects.untrusted import FileTooLarge, NotRegularFile, open_regular, read_file

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MAX_PIXELS_ENV = "LABELER_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 150_000_000
MAX_BYTES_ENV = "LABELER_MAX_IMAGE_BYTES"
DEFAULT_MAX_BYTES = 1 << 30


class ImageError(LabelerError, ValueError):
    """An image file is missing, unreadable or corrupt."""


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    sha256: str
    width: int
    height: int


def max_pixels() -> int:
    """The pixel cap (width x height) of any image Labeler decodes: env LABELER_MAX_PIXELS or 150 MP."""
    return _limit(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)


def max_bytes() -> int:
    """The most bytes read from one image file: env LABELER_MAX_IMAGE_BYTES or 1 GiB."""
    return _limit(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)


def _limit(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip().replace("_", "")
    if not text:
        return default
    if not text.isdigit() or int(text) <= 0 or len(text) > 30:
        raise ImageError(f"environment variable {name}={shorten(os.environ[name], 40)}: not a positive whole number")
    return int(text)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image as RGB uint8 (H, W, 3). Raises ImageError naming the file."""
    data = _read_bytes(path)
    return decode_image(data, path)


def check_header(data: bytes, path: str | Path = "<bytes>") -> tuple[int, int]:
    """(width, height) from the header, refused unless within `max_pixels()`; nothing is decoded."""
    if not data:
        raise ImageError(f"{path}: empty file (0 bytes), not an image")
    try:
        found = image_size(data)
    except HeaderError as e:
        raise ImageError(f"{path}: not a readable image ({e})") from e
    if found is None:
        raise ImageError(f"{path}: not a readable image (corrupt, or a format other than {', '.join(FORMATS)})")
    kind, w, h = found
    if w <= 0 or h <= 0:
        raise ImageError(f"{path}: not a readable image ({kind} header says {w}x{h} pixels)")
    cap = max_pixels()
    if w * h > cap:
        raise ImageError(f"{path}: image too large ({kind} header says {w}x{h} = {w * h / 1e6:,.1f} megapixels; "
                         f"the limit is {cap / 1e6:,.1f}, set {MAX_PIXELS_ENV} to raise it)")
    return w, h


def decode_image(data: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """Decode bytes as RGB uint8 after the header check; any decoder failure is an ImageError naming `path`."""
    if len(data) > max_bytes():
        raise ImageError(f"{path}: file too large ({len(data):,} bytes; the limit is {max_bytes():,}, "
                         f"set {MAX_BYTES_ENV} to raise it)")
    check_header(data, path)
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if arr is None:
            raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
        if arr.shape[0] * arr.shape[1] > max_pixels():  # the header lied (the decoder's size wins)
            raise ImageError(f"{path}: image too large ({arr.shape[1]}x{arr.shape[0]} pixels once decoded)")
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    except cv2.error as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ImageError(f"{path}: not a readable image (decoder: {shorten(reason, 160)})") from None
    except MemoryError:
        raise ImageError(f"{path}: not enough memory to decode this image") from None


def probe_image(path: str | Path) -> ImageInfo:
    """Hash and fully decode the file once (a truncated JPEG must be caught at import, not later)."""
    data = _read_bytes(path)
    img = decode_image(data, path)
    return ImageInfo(Path(path), hashlib.sha256(data).hexdigest(), int(img.shape[1]), int(img.shape[0]))


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of an image file, read with the same guards as `read_image` (regular file, byte cap)."""
    h = hashlib.sha256()
    with _open_regular(path) as f:
        total, cap = 0, max_bytes()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            total += len(chunk)
            if total > cap:
                raise _too_many_bytes(path, cap)
            h.update(chunk)
    if not total:
        raise ImageError(f"{path}: empty file (0 bytes), not an image")
    return h.hexdigest()


def write_image(path: str | Path, rgb: np.ndarray, quality: int = 92) -> None:
    p = Path(path)
    ext = p.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageError(f"{p}: cannot encode image")
    p.write_bytes(buf.tobytes())


def find_images(paths: list[str | Path]) -> list[Path]:
    """Expand folders (recursively, sorted) into image files; files are taken as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def _too_many_bytes(path: str | Path, cap: int) -> ImageError:
    return ImageError(f"{path}: file too large (over {cap:,} bytes; set {MAX_BYTES_ENV} to raise the limit)")


def _image_error(path: str | Path, e: BaseException) -> ImageError:
    """One line for what projects.untrusted refuses or the OS reports, in the words of an image file."""
    if isinstance(e, NotRegularFile):
        return ImageError(f"{path}: {e.kind}, not an image file (only regular files are read)")
    if isinstance(e, FileTooLarge):
        return _too_many_bytes(path, e.limit)
    if isinstance(e, FileNotFoundError):
        return ImageError(f"{path}: file not found")
    if isinstance(e, ValueError):  # an embedded NUL in the name
        return ImageError(f"{shorten(str(path), 200)}: not a valid file name ({e})")
    return ImageError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})")


@contextmanager
def _open_regular(path: str | Path) -> Iterator[BinaryIO]:
    try:
        f = open_regular(path)
    except (OSError, ValueError) as e:
        raise _image_error(path, e) from e
    with f:
        yield f


def _read_bytes(path: str | Path) -> bytes:
    try:
        return read_file(path, max_bytes())
    except (OSError, ValueError) as e:
        raise _image_error(path, e) from e

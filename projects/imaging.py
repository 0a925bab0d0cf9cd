"""Reading image files: decode, size and content hash, with errors that name the file.

Qt-free and thread-safe, so the GUI's decoder thread, the importer and the trainer share it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from projects.errors import LabelerError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


class ImageError(LabelerError, ValueError):
    """An image file is missing, unreadable or corrupt."""


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    sha256: str
    width: int
    height: int


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image as RGB uint8 (H, W, 3). Raises ImageError naming the file."""
    data = _read_bytes(path)
    return decode_image(data, path)


def decode_image(data: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def probe_image(path: str | Path) -> ImageInfo:
    """Hash and fully decode the file once (a truncated JPEG must be caught at import, not later)."""
    data = _read_bytes(path)
    img = decode_image(data, path)
    return ImageInfo(Path(path), hashlib.sha256(data).hexdigest(), int(img.shape[1]), int(img.shape[0]))


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


def _read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as e:
        raise ImageError(f"{path}: file not found") from e
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from e

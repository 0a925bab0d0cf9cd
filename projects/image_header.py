"""An image's width and height read from its header, before anything is decoded.

OpenCV has no header-only API, and a 1 MB PNG can claim 20000 x 20000 pixels (1.2 GB once decoded):
`projects.imaging` checks the size read here against the pixel cap first. Only the formats Labeler
decodes are understood; `image_size` returns None for anything else, which the caller refuses.
Pure Python on the first bytes of the file, so it cannot allocate more than the file it is given.
"""

from __future__ import annotations

import re
import struct

FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF", "PNM")


class HeaderError(ValueError):
    """The file starts like a known format but its header is truncated or inconsistent."""


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from the header of an encoded image, or None for an unknown format.

    Raises HeaderError when the header of a known format is truncated or broken."""
    for magic, reader in _READERS:
        if data.startswith(magic):
            try:
                return reader(data)
            except (struct.error, IndexError, ValueError) as e:
                raise HeaderError(f"broken {reader.__name__[1:].upper()} header ({e})") from e
    return None


def _png(data: bytes) -> tuple[str, int, int]:
    if data[12:16] != b"IHDR":
        raise ValueError("IHDR is not the first chunk")
    w, h = struct.unpack(">II", data[16:24])
    return "PNG", w, h


def _gif(data: bytes) -> tuple[str, int, int]:
    w, h = struct.unpack("<HH", data[6:10])
    return "GIF", w, h


def _bmp(data: bytes) -> tuple[str, int, int]:
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:  # BITMAPCOREHEADER
        w, h = struct.unpack("<HH", data[18:22])
    else:
        w, h = struct.unpack("<ii", data[18:26])
    return "BMP", abs(w), abs(h)  # a negative height means rows are stored top-down


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD9)}


def _jpeg(data: bytes) -> tuple[str, int, int]:
    i = 2
    while True:
        if data[i] != 0xFF:
            raise ValueError(f"no marker at byte {i}")
        while data[i] == 0xFF:  # fill bytes
            i += 1
        marker = data[i]
        i += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):
            raise ValueError("no frame header before the image data")
        (length,) = struct.unpack(">H", data[i:i + 2])
        if marker in _SOF:
            h, w = struct.unpack(">HH", data[i + 3:i + 7])
            return "JPEG", w, h
        if length < 2:
            raise ValueError(f"segment length {length} at byte {i}")
        i += length


def _webp(data: bytes) -> tuple[str, int, int]:
    if data[8:12] != b"WEBP":
        raise ValueError("a RIFF file that is not WEBP")
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise ValueError("no VP8 start code")
        w, h = struct.unpack("<HH", data[26:30])
        return "WEBP", w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise ValueError("no VP8L signature")
        (bits,) = struct.unpack("<I", data[21:25])
        return "WEBP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        if len(data) < 30:
            raise ValueError("truncated VP8X chunk")
        return "WEBP", w, h
    raise ValueError(f"unknown WEBP chunk {chunk!r}")


def _tiff(data: bytes) -> tuple[str, int, int]:
    """The first image (IFD) is what a decoder reads; classic TIFF and BigTIFF."""
    end = "<" if data[:2] == b"II" else ">"
    (version,) = struct.unpack(end + "H", data[2:4])
    big = version == 43
    if big:
        (offset,) = struct.unpack(end + "Q", data[8:16])
        (count,) = struct.unpack(end + "Q", data[offset:offset + 8])
        first, size = offset + 8, 20
    else:
        (offset,) = struct.unpack(end + "I", data[4:8])
        (count,) = struct.unpack(end + "H", data[offset:offset + 2])
        first, size = offset + 2, 12
    found: dict[int, int] = {}
    for k in range(min(count, 4096)):
        entry = data[first + k * size:first + (k + 1) * size]
        tag, kind = struct.unpack(end + "HH", entry[:4])
        if tag not in (256, 257):
            continue
        value = entry[12:] if big else entry[8:]
        if kind == 3:  # SHORT
            found[tag] = struct.unpack(end + "H", value[:2])[0]
        elif kind == 4:  # LONG
            found[tag] = struct.unpack(end + "I", value[:4])[0]
        elif kind == 16 and big:  # LONG8
            found[tag] = struct.unpack(end + "Q", value[:8])[0]
        else:
            raise ValueError(f"image size tag {tag} of type {kind}")
    if 256 not in found or 257 not in found:
        raise ValueError("no ImageWidth/ImageLength in the first IFD")
    return "TIFF", found[256], found[257]


_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n]*\n?)*(\d+)")


def _pnm(data: bytes) -> tuple[str, int, int]:
    head = data[:4096]
    if head[1:2] == b"7":  # PAM: WIDTH and HEIGHT lines
        w = re.search(rb"\nWIDTH\s+(\d+)", head)
        h = re.search(rb"\nHEIGHT\s+(\d+)", head)
        if not (w and h):
            raise ValueError("no WIDTH/HEIGHT")
        return "PNM", int(w.group(1)), int(h.group(1))
    m1 = _PNM_TOKEN.match(head, 2)
    if not m1:
        raise ValueError("no width")
    m2 = _PNM_TOKEN.match(head, m1.end())
    if not m2:
        raise ValueError("no height")
    return "PNM", int(m1.group(1)), int(m2.group(1))


_READERS = [
    (b"\x89PNG\r\n\x1a\n", _png),
    (b"\xff\xd8", _jpeg),
    (b"GIF87a", _gif),
    (b"GIF89a", _gif),
    (b"BM", _bmp),
    (b"RIFF", _webp),
    (b"II*\x00", _tiff),
    (b"MM\x00*", _tiff),
    (b"II+\x00", _tiff),
    (b"MM\x00+", _tiff),
    *((f"P{k}".encode(), _pnm) for k in range(1, 8)),
]

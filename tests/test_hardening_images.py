"""Reading images is bounded (issue 10, item 6): only regular files, a byte cap, a pixel cap checked on the
header before decoding, and every decoder failure as one ImageError that names the file.

Nothing here may hang: calls that used to block (a FIFO) run in a thread with a time limit, so a
regression fails the test instead of freezing CI.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from labeler.cli import main
from projects.image_header import image_size
from projects.imaging import ImageError, file_sha256, probe_image, read_image, write_image
from projects.synthetic import make_scene


def no_hang(fn, timeout: float = 10.0):
    """Run fn() in a thread; fail (never block) if it does not return within `timeout` seconds."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the test thread
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"still blocked after {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height (8-bit RGB): a real signature and IHDR, one tiny IDAT, no pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.fixture
def good(tmp_path) -> Path:
    path = tmp_path / "good.png"
    write_image(path, make_scene(0, size=(64, 48)).image)
    return path


def test_a_zero_byte_image_is_one_image_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for reader in (read_image, probe_image):
        with pytest.raises(ImageError, match=r"empty\.png: empty file \(0 bytes\)"):
            reader(empty)


def test_a_fifo_is_refused_at_once_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    try:
        for reader in (read_image, probe_image, file_sha256):
            with pytest.raises(ImageError, match=r"pipe\.png: a FIFO \(named pipe\), not an image file"):
                no_hang(lambda r=reader: r(fifo), timeout=10)
    finally:
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # frees a reader blocked by a regression
        os.close(fd)


def test_dev_zero_a_folder_and_a_socket_are_refused(tmp_path):
    with pytest.raises(ImageError, match="/dev/zero: a character device, not an image file"):
        no_hang(lambda: read_image("/dev/zero"), timeout=10)
    with pytest.raises(ImageError, match="a folder, not an image file"):
        read_image(tmp_path)
    folder = tempfile.mkdtemp(prefix="lbl")  # AF_UNIX paths are limited to ~100 characters
    path = os.path.join(folder, "s.png")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(path)
        with pytest.raises(ImageError, match=r"s\.png: a socket, not an image file"):
            no_hang(lambda: read_image(path), timeout=10)
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(folder)


def test_a_header_claiming_40000_by_40000_is_refused_before_decoding(tmp_path, monkeypatch):
    big = tmp_path / "bomb.png"
    big.write_bytes(png_header(40000, 40000))
    assert image_size(big.read_bytes()) == ("PNG", 40000, 40000)

    def never(*a, **k):
        raise AssertionError("decoded despite the pixel cap")

    monkeypatch.setattr(cv2, "imdecode", never)
    with pytest.raises(ImageError, match=r"bomb\.png: image too large \(PNG header says 40000x40000 = 1,600\.0 "
                                         r"megapixels; the limit is 150\.0, set LABELER_MAX_PIXELS"):
        probe_image(big)


def test_the_pixel_and_byte_caps_are_configurable(good, monkeypatch):
    assert read_image(good).shape == (48, 64, 3)
    monkeypatch.setenv("LABELER_MAX_PIXELS", str(64 * 48 - 1))
    with pytest.raises(ImageError, match=r"good\.png: image too large \(PNG header says 64x48"):
        read_image(good)
    monkeypatch.setenv("LABELER_MAX_PIXELS", str(64 * 48))
    assert read_image(good).shape == (48, 64, 3)
    monkeypatch.setenv("LABELER_MAX_IMAGE_BYTES", "100")
    with pytest.raises(ImageError, match=r"good\.png: file too large .*LABELER_MAX_IMAGE_BYTES"):
        read_image(good)
    monkeypatch.setenv("LABELER_MAX_IMAGE_BYTES", "lots")
    with pytest.raises(ImageError, match="LABELER_MAX_IMAGE_BYTES='lots': not a positive whole number"):
        read_image(good)


def test_a_decoder_error_becomes_the_one_line_image_error(good, monkeypatch):
    def broken(*a, **k):
        raise cv2.error("OpenCV(5.0.0) loadsave.cpp:1: error: (-215:Assertion failed) something in 'imdecode_'")

    monkeypatch.setattr(cv2, "imdecode", broken)
    with pytest.raises(ImageError, match=r"good\.png: not a readable image \(decoder: .*Assertion failed") as e:
        read_image(good)
    assert "\n" not in str(e.value)


def test_truncated_and_unknown_files_are_image_errors(tmp_path, good):
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:20])
    text = tmp_path / "notes.jpg"
    text.write_bytes(b"hello, not an image")
    with pytest.raises(ImageError, match=r"cut\.png: not a readable image \(broken PNG header"):
        read_image(cut)
    with pytest.raises(ImageError, match=r"notes\.jpg: not a readable image"):
        read_image(text)


@pytest.mark.parametrize("ext,params", [
    (".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []), (".webp", []),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".tiff", []), (".ppm", []), (".pam", [])])
def test_the_header_size_is_the_decoded_size(ext, params):
    rgb = (np.random.default_rng(0).random((37, 53, 3)) * 255).astype(np.uint8)
    ok, buf = cv2.imencode(ext, rgb, params)
    assert ok
    data = buf.tobytes()
    kind, w, h = image_size(data)
    assert (w, h) == (53, 37)
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (h, w)


def test_images_add_skips_a_zero_byte_file_and_keeps_the_rest_of_the_folder(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        write_image(folder / f"{i}.png", make_scene(i, size=(64, 48)).image)
    (folder / "1b_empty.png").write_bytes(b"")
    (folder / "2b_bomb.png").write_bytes(png_header(40000, 40000))
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert main(["init", str(tmp_path / "ws")]) == 0
    assert main(["project", "add", str(tmp_path / "ws"), "P"]) == 0
    capsys.readouterr()
    code = no_hang(lambda: main(["images", "add", str(tmp_path / "ws"), "--project", "P", str(folder), str(fifo)]),
                   timeout=60)
    out, err = capsys.readouterr()
    assert code == 0
    assert "added 3 images to 'P', skipped 3" in out
    assert "1b_empty.png: empty file (0 bytes)" in err
    assert "2b_bomb.png: image too large" in err
    assert "pipe.png: a FIFO" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("trust_sizes", [False, True])
def test_an_import_naming_an_empty_image_or_a_fifo_skips_them_without_blocking(tmp_path, trust_sizes):
    import json

    from projects.formats import ImportOptions, TransferError, import_annotations
    from projects.taxonomy import CustomerTaxonomy, Label
    from projects.workspace import Workspace

    src = tmp_path / "src"
    src.mkdir()
    write_image(src / "a.png", make_scene(0, size=(64, 48)).image)
    (src / "b.png").write_bytes(b"")
    os.mkfifo(src / "c.png")
    doc = {"images": [{"id": i + 1, "file_name": f"{n}.png", "width": 64, "height": 48} for i, n in enumerate("abc")],
           "categories": [{"id": 1, "name": "Car"}],
           "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [1, 1, 9, 9]} for i in range(3)]}
    (src / "annotations.json").write_text(json.dumps(doc))
    with Workspace.create(tmp_path / "ws") as ws:
        ws.add_project("T", CustomerTaxonomy([Label("Car", "car")]))
        opts = ImportOptions(trust_sizes=trust_sizes)
        with pytest.raises(TransferError) as e:
            no_hang(lambda: import_annotations(ws, "T", "coco", src / "annotations.json", opts), timeout=60)
        assert "c.png" in str(e.value) and ws.image_ids("T") == []
        opts = ImportOptions(trust_sizes=trust_sizes, skip_missing=True)
        report = no_hang(lambda: import_annotations(ws, "T", "coco", src / "annotations.json", opts), timeout=60)
        assert "b.png: empty file (0 bytes)" in "\n".join(report.lines())
        assert [Path(ws.image(i)["path"]).name for i in ws.image_ids("T")] == ["a.png"]

"""The image loader: decoding happens off the GUI thread, neighbours are prefetched, stale work is dropped."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from labeler.app.loader import ImageLoader, decode
from projects.imaging import ImageError, read_image, write_image


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"img{i}.png"
        write_image(p, np.full((60, 80, 3), i * 40, np.uint8))
        paths.append((i + 1, str(p)))
    return paths


def test_decoding_runs_off_the_gui_thread_and_prefetches_neighbours(qtbot, files):
    threads = []

    def reader(path):
        threads.append(threading.get_ident())
        return read_image(path)

    loader = ImageLoader(reader=reader)
    with qtbot.waitSignal(loader.loaded, timeout=5000) as sig:
        assert loader.request(files[0], files[1:3]) is None  # nothing cached yet: it comes later
    image_id, decoded = sig.args
    assert image_id == 1 and (decoded.width, decoded.height) == (80, 60)
    assert decoded.levels[0].pixelColor(5, 5).red() == 0
    qtbot.waitUntil(lambda: loader.cached(2) is not None and loader.cached(3) is not None, timeout=5000)
    assert threading.get_ident() not in threads and len(threads) == 3
    assert loader.request(files[1]) is loader.cached(2)  # a prefetched neighbour is shown at once
    loader.wait()


def test_without_prefetch_only_the_current_image_is_decoded(qtbot, files):
    loader = ImageLoader(prefetch=False)
    with qtbot.waitSignal(loader.loaded, timeout=5000):
        loader.request(files[0], files[1:3])
    loader.wait()
    qtbot.wait(50)
    assert loader.decoded == 1 and loader.cached(2) is None


def test_queued_requests_for_images_flipped_past_are_dropped(qtbot, files):
    gate = threading.Event()
    read = []

    def slow_reader(path):
        read.append(path)
        gate.wait(5)
        return read_image(path)

    loader = ImageLoader(threads=1, reader=slow_reader)
    loader.request(files[0], files[1:3])  # 1 runs (blocked), 2 and 3 wait in the queue
    qtbot.waitUntil(lambda: len(read) == 1)
    loader.request(files[4])  # the annotator jumped to image 5: 2 and 3 are not needed any more
    gate.set()
    qtbot.waitUntil(lambda: loader.cached(5) is not None, timeout=5000)
    loader.wait()
    assert read == [files[0][1], files[4][1]]


def test_a_corrupt_file_fails_with_its_name(qtbot, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    loader = ImageLoader()
    with qtbot.waitSignal(loader.failed, timeout=5000) as sig:
        loader.request((9, str(bad)))
    assert sig.args[0] == 9 and "bad.jpg" in sig.args[1] and "not a readable image" in sig.args[1]
    with pytest.raises(ImageError, match="file not found"):
        decode(1, tmp_path / "missing.jpg")


def test_big_images_get_a_pyramid_and_the_cache_is_bounded(qtbot):
    big = np.zeros((3000, 4000, 3), np.uint8)
    d = decode(1, "<memory>", reader=lambda path: big)
    assert [(q.width(), q.height()) for q in d.levels] == [(4000, 3000), (2000, 1500), (1000, 750)]
    loader = ImageLoader(cache_bytes=d.nbytes + 1, reader=lambda path: big)
    for i in (1, 2):
        with qtbot.waitSignal(loader.loaded, timeout=10000):
            loader.request((i, f"img{i}"))
    assert loader.cached(1) is None and loader.cached(2) is not None  # the older one was evicted
    loader.wait()

"""Tight boxes: a rough box re-detected on a crop at the training scale maps back exactly, mirror averaging
cancels a model's sideways error, and the option is honoured by the pre-label worker."""

from __future__ import annotations

import numpy as np
import pytest

from inference.refine import refine_box
from inference.tighten import CropModel, TightOptions, cut, tighten, window_for
from inference.worker import PredictionService
from projects.imaging import write_image
from projects.values import Detection

SIZE = 128  # the fake model's input size


class BlockFinder:
    """A fake detector that finds the bright block: the extent of the pixels brighter than 160 (the padding is
    128) in whatever image it gets, in that image's pixels, as the real predictor answers; `lean` moves its
    boxes that many pixels to the left, a sideways error like a real model's."""

    version = "blocks"
    image_size = SIZE
    mean = (127.5, 127.5, 127.5)

    def __init__(self, lean: float = 0.0):
        self.lean = lean
        self.inputs: list[tuple[int, int]] = []

    def predict(self, images):
        out = []
        for img in images:
            self.inputs.append(img.shape[:2])
            ys, xs = np.nonzero(img.min(axis=2) > 160)
            if not len(xs):
                out.append([])
                continue
            box = (float(xs.min()) - self.lean, float(ys.min()), float(xs.max() + 1) - self.lean, float(ys.max() + 1))
            out.append([Detection("car", box, 0.9)])
        return out

    def tighten(self, images, detections):
        return tighten(images, detections, self.predict)


def scene(block, shape=(240, 320)):
    img = np.zeros((*shape, 3), np.uint8)
    x1, y1, x2, y2 = block
    img[y1:y2, x1:x2] = 255
    return img


# (true block, the rough box drawn, the crop's scale): the rough box's longer side sets the scale
CASES = [((100, 80, 116, 96), (98, 83, 114, 95), 2.0),    # 16 px: upsampled x2 to the training scale
         ((20, 20, 84, 84), (22, 18, 86, 78), 0.5),       # 64 px: shrunk x2, the window leaves the image
         ((0, 100, 20, 132), (0, 98, 22, 130), 1.0)]      # on the image's left border: padded with the mean


@pytest.mark.parametrize(("block", "rough", "scale"), CASES)
def test_a_rough_box_redetected_at_training_scale_maps_back_onto_the_object(block, rough, scale):
    img = scene(block)
    finder = BlockFinder()
    model = CropModel(finder.predict, SIZE, options=TightOptions(target=0.25))
    p = refine_box(img, rough, [], None, use_grabcut=False, tight=model)
    assert cut(img, *window_for(rough, SIZE, 0.25), SIZE)[3] == scale
    assert p is not None and p.source == "redetect" and p.node == "car"
    np.testing.assert_allclose(p.box, block, atol=1e-6)
    assert finder.inputs == [(SIZE, SIZE)]  # one forward pass, on the model's input size


def test_the_crop_puts_the_box_at_the_target_size_and_fills_outside_the_image_with_the_mean():
    img = scene((0, 100, 20, 140))
    crop, x0, y0, scale = cut(img, *window_for((0, 100, 20, 140), SIZE, 0.25), SIZE)
    assert crop.shape == (SIZE, SIZE, 3) and scale == pytest.approx(SIZE / 160)
    assert 40 * scale == pytest.approx(0.25 * SIZE)  # the longer side (40 px) becomes a quarter of the input
    assert tuple(crop[2, 2]) == (128, 128, 128)  # left of the image: padding, not black


def test_mirror_averaging_cancels_a_sideways_error():
    block = (100, 80, 140, 120)
    img = scene(block)
    finder = BlockFinder(lean=3.0)
    (dets,) = finder.predict([img])
    assert dets[0].box == (97, 80, 137, 120)
    (out,) = tighten([img], [dets], finder.predict)
    np.testing.assert_allclose(out[0].box, block)  # 3 px left here, 3 px right in the mirror: averaged away
    assert out[0].node == "car" and out[0].score == 0.9


def test_only_confident_detections_with_a_twin_of_their_node_move():
    img = scene((100, 80, 140, 120))
    finder = BlockFinder(lean=3.0)
    dets = [Detection("car", (97, 80, 137, 120), 0.9),   # averaged with its mirrored twin
            Detection("bus", (97, 80, 137, 120), 0.9),   # the mirrored image shows no bus there: kept
            Detection("car", (97, 79, 139, 119), 0.1)]   # below min_score: kept
    (out,) = tighten([img], [dets], finder.predict, TightOptions(min_score=0.25))
    assert out[0].box == (100, 80, 140, 120)
    assert out[1:] == dets[1:]
    assert tighten([img], [dets[2:]], finder.predict, TightOptions(min_score=0.25)) == [dets[2:]]  # no pass
    assert len(finder.inputs) == 1


@pytest.mark.parametrize("tight", [True, False])
def test_the_worker_stores_mirror_averaged_boxes_only_with_tight_boxes(ws, tmp_path, tight):
    ws.add_project("P")
    write_image(tmp_path / "a.png", scene((100, 80, 140, 120)))
    (image_id,) = ws.add_images("P", [tmp_path / "a.png"]).added
    model_id = ws.register_model("blocks", ws.folder / "blocks")
    finder = BlockFinder(lean=3.0)
    svc = PredictionService(ws.folder, threads=1, loader=lambda path, threads: finder, tight_boxes=tight)
    svc.start()
    svc.request(image_id)
    assert svc.wait_idle(30)
    svc.stop()
    (row,) = ws.predictions(image_id, model_id)
    assert (row["x1"], row["x2"]) == ((100.0, 140.0) if tight else (97.0, 137.0))
    assert len(finder.inputs) == (2 if tight else 1) and svc.forward_passes == 1

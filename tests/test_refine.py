"""Click- and box-to-refine: which detection a click or rough box becomes, crops map back, GrabCut."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

from inference.refine import (
    box_redetect,
    click_redetect,
    crop_window,
    from_box,
    from_click,
    grabcut,
    refine_box,
    refine_click,
)


@dataclass
class Det:
    node: str
    box: tuple
    score: float


def iou(a, b) -> float:
    return float(box_iou(torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32))[0, 0])


BUS = Det("bus", (10, 10, 200, 120), 0.9)
PED = Det("pedestrian_adult", (90, 40, 120, 118), 0.7)


def test_click_picks_the_object_centred_under_it():
    assert from_click((105, 80), [BUS, PED]).node == "pedestrian_adult"
    assert from_click((30, 30), [BUS, PED]).node == "bus"
    assert from_click((300, 300), [BUS, PED]) is None
    assert from_click((105, 80), [BUS, PED], allowed_nodes={"bus"}).node == "bus"  # project labels only buses


def test_rough_box_snaps_to_best_iou_times_score():
    rough = (85, 35, 125, 115)
    p = from_box(rough, [BUS, PED])
    assert p.node == "pedestrian_adult" and p.box == PED.box and p.source == "cache"
    assert from_box((300, 300, 320, 320), [BUS, PED]) is None  # IoU below 0.3 with everything


def red_square_image():
    img = np.full((240, 320, 3), 120, np.uint8)
    img[100:140, 200:250] = (230, 20, 20)
    return img, (200.0, 100.0, 250.0, 140.0)


def colour_detector(crop: np.ndarray):
    """A real (if tiny) detector used as the model: finds the red blob in whatever crop it is given."""
    ys, xs = np.nonzero((crop[..., 0] > 200) & (crop[..., 1] < 60))
    if len(xs) == 0:
        return []
    return [Det("traffic_sign", (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)), 0.8)]


def test_redetect_maps_crop_boxes_back_to_the_image():
    img, truth = red_square_image()
    p = click_redetect(img, (220, 120), colour_detector)
    assert p.source == "redetect" and iou(p.box, truth) > 0.99
    p = box_redetect(img, (190, 95, 262, 150), colour_detector)
    assert p.source == "redetect" and iou(p.box, truth) > 0.99
    assert click_redetect(img, (20, 20), colour_detector) is None  # nothing under that click


def test_grabcut_tightens_a_loose_box_on_an_unknown_object():
    img, truth = red_square_image()
    img = cv2.GaussianBlur(img, (3, 3), 0)
    loose = (185, 88, 268, 155)
    assert iou(loose, truth) < 0.5
    p = grabcut(img, loose)
    assert p.source == "grabcut" and iou(p.box, truth) > 0.85


def test_fallback_order_cache_then_redetect_then_grabcut():
    img, truth = red_square_image()
    rough = (190, 92, 262, 150)
    cached = Det("traffic_sign", truth, 0.6)
    assert refine_box(img, rough, [cached], colour_detector).source == "cache"
    assert refine_box(img, rough, [], colour_detector).source == "redetect"
    assert refine_box(img, rough, [], lambda crop: []).source == "grabcut"
    assert refine_box(img, rough, [], None, use_grabcut=False) is None
    assert refine_click(img, (220, 120), [], colour_detector).source == "redetect"


def test_crop_window_is_clipped():
    assert crop_window((100, 100, 3), (-10, -10, 20, 20)) == (0.0, 0.0, 37.0, 37.0)

"""Letterboxing: fit any image into the detector's fixed square input and map boxes back.

The image is scaled so its longer side equals the input size and placed at the top-left corner; the
rest is filled with the normalisation mean (zero after normalising). Top-left placement makes the
inverse a single division by the scale, shared by training (boxes in) and prediction (boxes out).
"""

from __future__ import annotations

import cv2
import numpy as np


def letterbox(image: np.ndarray, size: int, fill: tuple[float, float, float] = (127.5, 127.5, 127.5)
              ) -> tuple[np.ndarray, float]:
    """(size x size x 3 uint8 image, scale) with `scale` = letterboxed pixels per original pixel."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    h, w = image.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    scale = size / max(h, w)
    nh, nw = max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else image
    out = np.empty((size, size, 3), np.uint8)
    out[:] = np.clip(np.round(fill), 0, 255).astype(np.uint8)
    out[:nh, :nw] = resized
    return out, scale


def boxes_to_letterbox(boxes: np.ndarray, scale: float) -> np.ndarray:
    return np.asarray(boxes, np.float32).reshape(-1, 4) * scale


def boxes_from_letterbox(boxes: np.ndarray, scale: float, width: int, height: int) -> np.ndarray:
    """Undo the letterbox and clip to the original image."""
    out = np.asarray(boxes, np.float32).reshape(-1, 4) / scale
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out

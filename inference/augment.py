"""Training augmentation with torchvision's v2 transforms, which move the boxes with the pixels.

Mild on purpose: colour jitter (customers' cameras differ), horizontal flips, small shifts and zooms.
Boxes pushed mostly out of the frame are dropped by `SanitizeBoundingBoxes`; the returned indices say
which boxes survived, so their nodes and weights can follow.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


def default_augmentation() -> v2.Transform:
    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomAffine(degrees=0.0, translate=(0.05, 0.05), scale=(0.85, 1.15)),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=2.0),
    ])


def augment(image: np.ndarray, boxes: np.ndarray, transform: v2.Transform) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image RGB uint8, boxes xyxy [M, 4], indices of the boxes kept) after the transform."""
    h, w = image.shape[:2]
    img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
    bx = tv_tensors.BoundingBoxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), format="XYXY",
                                  canvas_size=(h, w))
    out = transform({"image": img, "boxes": bx, "labels": torch.arange(len(bx))})
    image_out = out["image"].permute(1, 2, 0).contiguous().numpy()
    return image_out, out["boxes"].numpy().astype(np.float32).reshape(-1, 4), out["labels"].numpy()

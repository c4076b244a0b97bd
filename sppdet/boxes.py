"""The one internal box convention, and conversions at the edges.

Internal boxes are float arrays of shape (N, 4): continuous pixel coordinates
(x1, y1, x2, y2) with area (x2 - x1) * (y2 - y1), the convention of torchvision.ops.
A VOC box (xmin, ymin, xmax, ymax), 1-based and inclusive, maps to
(xmin - 1, ymin - 1, xmax, ymax); with it torchvision's areas and IoUs equal the VOC
devkit's "+1" areas and IoUs exactly.
"""

from __future__ import annotations

import numpy as np

# One copy of these two (the proposals package never imports sppdet).
from proposals.boxes import clip_boxes, xywh_to_xyxy

__all__ = ["box_area", "box_iou", "clip_boxes", "internal_to_voc", "voc_to_internal", "xywh_to_xyxy"]


def voc_to_internal(boxes: np.ndarray) -> np.ndarray:
    """VOC 1-based inclusive (xmin, ymin, xmax, ymax) -> internal (x1, y1, x2, y2)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, :2] -= 1.0
    return b


def internal_to_voc(boxes: np.ndarray) -> np.ndarray:
    """Internal (x1, y1, x2, y2) -> VOC 1-based inclusive (xmin, ymin, xmax, ymax)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, :2] += 1.0
    return b


def mirror_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Internal boxes of an image of ``width`` pixels as they lie in its left-right mirror.

    Pixel column i (covering [i, i + 1)) goes to column width - 1 - i, so a box
    [x1, x2) covers [width - x2, width - x1) in the mirror; y is unchanged.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = boxes.copy()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def box_area(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (len(a), len(b)) of internal boxes (numpy, float64)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


"""Box helpers on internal (x1, y1, x2, y2) continuous pixel coordinates (numpy only);
``sppdet.boxes`` re-exports them (this package never imports sppdet)."""

from __future__ import annotations

import numpy as np


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """OpenCV rectangles (x, y, w, h), (x, y) the top-left pixel -> internal (x1, y1, x2, y2).

    A rectangle covering pixels x .. x + w - 1 spans [x, x + w) in continuous coordinates.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip boxes to the image [0, width] x [0, height] (a new float64 array)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(b, 0.0, np.array([width, height, width, height], dtype=np.float64))

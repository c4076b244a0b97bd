"""Box post-processing shared by every method: scale back, clip, filter, dedupe, top-k.

All functions are vectorised numpy; boxes are internal (x1, y1, x2, y2) continuous pixel
coordinates with area (x2 - x1) * (y2 - y1) (the convention of ``sppdet.boxes``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from proposals.boxes import clip_boxes, xywh_to_xyxy  # noqa: F401  (xywh_to_xyxy re-exported)


@dataclass(frozen=True)
class Proposals:
    """The proposals of one image: boxes (N, 4) float32 in original pixels, inside the
    image, best first; scores (N,) float32, non-increasing."""

    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


def downscale_image(image: np.ndarray, max_side: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Shrink ``image`` so its longer side is ``max_side`` (0: never).

    Returns the image to propose on and the factors (sx, sy) that map its x and y
    coordinates back to the original image.
    """
    height, width = image.shape[:2]
    if max_side <= 0 or max(height, width) <= max_side:
        return image, (1.0, 1.0)
    f = max_side / max(height, width)
    new_w, new_h = max(1, round(width * f)), max(1, round(height * f))
    small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return small, (width / new_w, height / new_h)


def scale_boxes(boxes: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Multiply x coordinates by scale[0] and y coordinates by scale[1]."""
    sx, sy = scale
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * np.array([sx, sy, sx, sy])


def min_side_mask(boxes: np.ndarray, min_side: float) -> np.ndarray:
    """True where both the width and the height are >= ``min_side`` (and positive)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return (w >= min_side) & (h >= min_side) & (w > 0) & (h > 0)


def first_unique_mask(boxes: np.ndarray) -> np.ndarray:
    """True at the first occurrence of each box, boxes compared after rounding to whole
    pixels; later duplicates are False. Order is preserved."""
    mask = np.zeros(len(boxes), dtype=bool)
    if len(boxes):
        keys = np.round(boxes).astype(np.int64)
        _, first = np.unique(keys, axis=0, return_index=True)
        mask[first] = True
    return mask


def finalize(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    scale: tuple[float, float],
    width: int,
    height: int,
    min_side: float,
    dedupe: bool,
    max_boxes: int,
) -> Proposals:
    """Raw best-first boxes on the (possibly down-scaled) image -> final ``Proposals``:
    scale back, clip to the image, drop small boxes, drop duplicates, keep the top
    ``max_boxes``. The relative order of the kept boxes is unchanged."""
    b = clip_boxes(scale_boxes(boxes, scale), width, height)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(b):
        raise ValueError(f"{len(b)} boxes but {len(s)} scores")
    keep = min_side_mask(b, min_side)
    b, s = b[keep], s[keep]
    if dedupe:
        keep = first_unique_mask(b)
        b, s = b[keep], s[keep]
    b, s = b[:max_boxes], s[:max_boxes]
    return Proposals(boxes=b.astype(np.float32).reshape(-1, 4), scores=s.astype(np.float32))


def rank_scores(n: int) -> np.ndarray:
    """Scores for a method that only ranks: 1, (n-1)/n, ..., 1/n (strictly decreasing)."""
    return (np.arange(n, 0, -1, dtype=np.float64) / max(n, 1)).astype(np.float32)

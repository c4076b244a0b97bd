"""Small synthetic images with known objects, shared by the proposals tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# Filled rectangles: (x1, y1, x2, y2) internal convention, BGR colour. cv2.rectangle draws
# inclusive pixel corners, so pixels x1..x2-1 are filled.
OBJECTS = [((20, 30, 70, 90), (30, 60, 200)), ((100, 10, 150, 50), (200, 40, 40)),
           ((90, 70, 140, 110), (40, 180, 60))]


def synthetic_image(seed: int = 0, height: int = 120, width: int = 160,
                    objects=OBJECTS) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grey background with filled rectangles; returns (image, gt boxes)."""
    rng = np.random.default_rng(seed)
    img = (190 + rng.integers(0, 25, (height, width, 3))).astype(np.uint8)
    for (x1, y1, x2, y2), colour in objects:
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), colour, -1)
    return img, np.array([o[0] for o in objects], dtype=np.float64)


def write_images(folder: Path, n: int, corrupt: tuple[int, ...] = ()) -> list[tuple[str, Path]]:
    """Write n synthetic PNGs (index i in ``corrupt`` gets garbage bytes); (id, path) list."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        path = folder / f"img{i:03d}.png"
        if i in corrupt:
            path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
        else:
            cv2.imwrite(str(path), synthetic_image(seed=i)[0])
        items.append((f"img{i:03d}", path))
    return items


def brute_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU by plain loops, independent of the code under test."""
    out = np.zeros((len(a), len(b)))
    for i, (ax1, ay1, ax2, ay2) in enumerate(a):
        for j, (bx1, by1, bx2, by2) in enumerate(b):
            iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
            ih = max(0.0, min(ay2, by2) - max(ay1, by1))
            inter = iw * ih
            out[i, j] = inter / ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter)
    return out

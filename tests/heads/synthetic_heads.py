"""A synthetic, deterministic stand-in for the feature cache and the training records.

Features of a window are a pure function of its box and the image's ground truth:
for every class c, (max IoU with class-c ground truth) x a random class prototype, the
regression targets towards the best-overlapping ground-truth box (scaled), plus a small
deterministic "noise" term sin(box @ R). GT boxes of class c are thus far from windows
that overlap class c by < 0.3, and box regression can be learned linearly.
"""

from __future__ import annotations

import numpy as np

from sppdet.heads.bbox_regression import bbox_targets
from sppdet.heads.sources import TrainingImage, best_gt, class_overlaps


def random_boxes(rng: np.random.Generator, n: int, size: float = 200.0) -> np.ndarray:
    xy = rng.uniform(0, size * 0.7, (n, 2))
    wh = rng.uniform(size * 0.1, size * 0.3, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def jitter(rng: np.random.Generator, boxes: np.ndarray, n_per: int, amount: float) -> np.ndarray:
    b = np.repeat(boxes, n_per, axis=0)
    w = (b[:, 2] - b[:, 0])[:, None]
    h = (b[:, 3] - b[:, 1])[:, None]
    scale = np.concatenate([w, h, w, h], axis=1)
    return b + rng.uniform(-amount, amount, b.shape) * scale


def make_images(num_images: int, num_classes: int, seed: int = 0, n_random: int = 60,
                n_jitter: int = 6) -> list[TrainingImage]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(num_images):
        g = int(rng.integers(1, 4))
        gt = random_boxes(rng, g)
        labels = rng.integers(0, num_classes, g).astype(np.int64)
        props = np.concatenate([jitter(rng, gt, n_jitter, 0.15), random_boxes(rng, n_random)])
        difficult = rng.random(g) < 0.15
        out.append(TrainingImage(f"img{i:04d}", props, gt, labels, difficult))
    return out


class SyntheticSource:
    """``FeatureSource`` over ``images``; counts calls per image id."""

    def __init__(self, images: list[TrainingImage], num_classes: int, dim: int = 24,
                 seed: int = 0, noise: float = 0.05, target_gain: float = 1.0):
        rng = np.random.default_rng(seed + 1000)
        self.by_id = {ti.image_id: ti for ti in images}
        self.C = num_classes
        self.protos = rng.normal(0, 1, (num_classes, dim - 4))
        self.R = rng.normal(0, 0.05, (4, dim))
        self.phase = rng.uniform(0, 6.28, dim)
        self.noise = noise
        self.target_gain = target_gain
        self.calls: dict[str, int] = {}
        self.windows_pooled = 0

    def pooled(self, image_id: str, boxes: np.ndarray) -> np.ndarray:
        self.calls[image_id] = self.calls.get(image_id, 0) + 1
        ti = self.by_id[image_id]
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        self.windows_pooled += len(boxes)
        ov = class_overlaps(boxes, ti.gt_boxes, ti.gt_labels, self.C)
        iou, arg = best_gt(boxes, ti.gt_boxes)
        t = np.zeros((len(boxes), 4))
        near = iou > 0.3
        if near.any():
            t[near] = bbox_targets(boxes[near], ti.gt_boxes[arg[near]])
        x = np.concatenate([ov @ self.protos, self.target_gain * t], axis=1)
        x += self.noise * np.sin(boxes @ self.R + self.phase)
        return (x + 0.5).astype(np.float32)

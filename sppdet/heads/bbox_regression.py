"""Class-specific bounding-box regression (R-CNN, appendix C), as used by SPP-net.

A proposal P (centre px, py, size pw, ph) and its ground-truth box G give targets
    dx = (gx - px) / pw, dy = (gy - py) / ph, dw = log(gw / pw), dh = log(gh / ph)
in the internal continuous convention (width = x2 - x1, centre = x1 + width / 2). Per
class, ridge regression maps the window's scaled pooled features to the targets,
normalised by their per-class mean and standard deviation (stored). Lambda defaults to
SPP-net's 4000 (R-CNN used 1000); training windows overlap a ground-truth box by
IoU >= 0.5 (SPP-net; R-CNN used 0.6), each assigned to its best-overlapping box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import Ridge

from sppdet.errors import ArgumentError

# Largest log-scale change applied at test time (torchvision's choice): exp() stays finite.
MAX_LOG_SCALE = float(np.log(1000.0 / 16))


@dataclass(frozen=True)
class BoxRegParams:
    """Box regression settings."""

    lam: float = 4000.0
    min_iou: float = 0.5
    max_per_class: int | None = 5000


def _centres(boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h, w, h


def bbox_targets(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, 4) regression targets (dx, dy, dw, dh) from boxes to their ground truth."""
    px, py, pw, ph = _centres(boxes)
    gx, gy, gw, gh = _centres(gt)
    if np.any(pw <= 0) or np.any(ph <= 0) or np.any(gw <= 0) or np.any(gh <= 0):
        raise ArgumentError("bbox_targets: boxes must have positive width and height")
    return np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], axis=1)


def apply_deltas(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Invert ``bbox_targets``: move boxes (N, 4) by deltas (N, 4)."""
    px, py, pw, ph = _centres(boxes)
    d = np.asarray(deltas, np.float64).reshape(-1, 4)
    cx, cy = px + d[:, 0] * pw, py + d[:, 1] * ph
    w = pw * np.exp(np.minimum(d[:, 2], MAX_LOG_SCALE))
    h = ph * np.exp(np.minimum(d[:, 3], MAX_LOG_SCALE))
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)


@dataclass(frozen=True)
class BoxRegressor:
    """Per-class linear regressors: deltas = (x @ W[c] + b[c]) * std[c] + mean[c].

    ``x`` are scaled pooled features. A class without training windows has W = 0, b = 0,
    mean = 0: it leaves boxes unchanged.
    """

    W: np.ndarray  # (C, D, 4) float32
    b: np.ndarray  # (C, 4) float32
    mean: np.ndarray  # (C, 4) float32
    std: np.ndarray  # (C, 4) float32

    @property
    def num_classes(self) -> int:
        return self.W.shape[0]

    def deltas(self, x: np.ndarray) -> np.ndarray:
        """(N, C, 4) de-normalised deltas of every class for features ``x`` (N, D)."""
        C, D, _ = self.W.shape
        flat = self.W.transpose(1, 0, 2).reshape(D, C * 4)
        z = (np.asarray(x, np.float32) @ flat).reshape(-1, C, 4) + self.b[None]
        return z.astype(np.float64) * self.std[None] + self.mean[None]

    def predict(self, x: np.ndarray, boxes: np.ndarray, class_idx: int | np.ndarray | None = None) -> np.ndarray:
        """Regressed boxes: (N, 4) for one class or per-box classes, (N, C, 4) for ``None``."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        d = self.deltas(x)
        n = len(boxes)
        if class_idx is None:
            C = d.shape[1]
            return apply_deltas(np.repeat(boxes, C, axis=0), d.reshape(-1, 4)).reshape(n, C, 4)
        idx = np.broadcast_to(np.asarray(class_idx, np.int64), (n,))
        return apply_deltas(boxes, d[np.arange(n), idx])


def fit_class_regressor(x: np.ndarray, boxes: np.ndarray, gt: np.ndarray,
                        lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ridge fit for one class: returns (W (D, 4), b (4,), mean (4,), std (4,))."""
    t = bbox_targets(boxes, gt)
    mean = t.mean(axis=0)
    std = t.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    ridge = Ridge(alpha=lam, fit_intercept=True)
    ridge.fit(np.asarray(x, np.float64), (t - mean) / std)
    return ridge.coef_.T.astype(np.float32), ridge.intercept_.astype(np.float32), mean, std


def fit_box_regressor(examples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], dim: int,
                      lam: float = BoxRegParams.lam, progress=None) -> tuple[BoxRegressor, list[int]]:
    """Fit every class from ``examples[c] = (x (n, D), boxes (n, 4), gt (n, 4))``.

    Returns the regressor and the number of training windows per class. ``progress``
    wraps the class range (e.g. tqdm).
    """
    C = len(examples)
    W = np.zeros((C, dim, 4), np.float32)
    b = np.zeros((C, 4), np.float32)
    mean = np.zeros((C, 4), np.float32)
    std = np.ones((C, 4), np.float32)
    counts = []
    classes = range(C) if progress is None else progress(range(C))
    for c in classes:
        x, boxes, gt = examples[c]
        counts.append(len(x))
        if len(x) == 0:
            continue
        W[c], b[c], mean[c], std[c] = fit_class_regressor(x, boxes, gt, lam)
    return BoxRegressor(W, b, mean, std), counts

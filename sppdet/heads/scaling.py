"""Feature scaling: one factor that makes the mean L2 norm of features equal a target (20).

R-CNN's ``rcnn_feature_stats``: sample windows (default 200) from a seeded random subset
of images (default 200), take the mean L2 norm of their features, and scale every feature
by ``target_norm / mean_norm``. The factor is stored with the model and applied at test time.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from sppdet.errors import DataError
from sppdet.heads.sources import FeatureSource, TrainingImage

TARGET_NORM = 20.0
NORM_IMAGES = 200  # images sampled to estimate the mean norm
NORM_WINDOWS = 200  # windows sampled per image


def sample_windows(images: Sequence[TrainingImage], num_images: int, windows_per_image: int,
                   seed: int) -> list[tuple[int, np.ndarray]]:
    """A seeded sample: (image index, boxes) for up to ``num_images`` images."""
    rng = np.random.default_rng(seed)
    n = len(images)
    picked = np.sort(rng.choice(n, size=min(num_images, n), replace=False)) if n else []
    out = []
    for i in picked:
        windows = images[int(i)].windows()
        if len(windows) == 0:
            continue
        k = min(windows_per_image, len(windows))
        rows = np.sort(rng.choice(len(windows), size=k, replace=False))
        out.append((int(i), windows[rows]))
    return out


def estimate_scale(images: Sequence[TrainingImage], source: FeatureSource, *,
                   transform: Callable[[np.ndarray], np.ndarray] | None = None,
                   target_norm: float = TARGET_NORM, num_images: int = NORM_IMAGES,
                   windows_per_image: int = NORM_WINDOWS, seed: int = 0) -> tuple[float, float]:
    """Return (scale, mean_norm) with scale = target_norm / mean L2 norm of sampled features.

    ``transform`` maps pooled features to the features being scaled (e.g. fc7 outputs).
    """
    norms = []
    for i, boxes in sample_windows(images, num_images, windows_per_image, seed):
        x = np.asarray(source.pooled(images[i].image_id, boxes), dtype=np.float32)
        if transform is not None:
            x = transform(x)
        norms.append(np.linalg.norm(x.astype(np.float64), axis=1))
    if not norms:
        raise DataError("cannot estimate the feature scale: no windows in the training images")
    mean_norm = float(np.concatenate(norms).mean())
    if not np.isfinite(mean_norm) or mean_norm <= 0:
        raise DataError(f"cannot estimate the feature scale: mean feature norm is {mean_norm}")
    return target_norm / mean_norm, mean_norm

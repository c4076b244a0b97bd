"""Image pyramid (resize so that min side = s, longer side capped) and scale selection."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from sppdet.defaults import SINGLE_SCALE  # noqa: F401  (re-exported by sppdet.features)

DEFAULT_SCALES: tuple[int, ...] = (480, 576, 688, 864, 1200)
# The longer side is capped here; 2000 keeps the paper's 1200 scale intact for VOC-sized
# (500 x 375) images, whose longer side then becomes 1600.
DEFAULT_MAX_SIZE = 2000
TARGET_AREA = 224.0 * 224.0

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resized_shape(image_hw: tuple[int, int], scale: int, max_size: int) -> tuple[int, int]:
    """(height, width) after resizing so that min side = scale, longer side <= max_size."""
    h, w = image_hw
    f = scale / min(h, w)
    if f * max(h, w) > max_size:
        f = max_size / max(h, w)
    return max(1, int(round(h * f))), max(1, int(round(w * f)))


def scale_factors(image_hw: tuple[int, int], scales: Sequence[int], max_size: int) -> np.ndarray:
    """(S, 2) actual per-axis resize factors (fx, fy) of every scale (after rounding)."""
    h, w = image_hw
    out = np.empty((len(scales), 2), dtype=np.float64)
    for i, s in enumerate(scales):
        nh, nw = resized_shape(image_hw, s, max_size)
        out[i] = (nw / w, nh / h)
    return out


def nearest_scale(boxes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Index of the scale whose scaled box area is nearest 224 x 224, per box.

    ``factors`` (S, 2) holds (fx, fy) per scale; the scaled area is w h fx fy.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    f = np.asarray(factors, dtype=np.float64).reshape(-1, 2)
    scaled = area[:, None] * (f[:, 0] * f[:, 1])[None, :]
    return np.argmin(np.abs(scaled - TARGET_AREA), axis=1).astype(np.int64)


def select_scales(boxes: np.ndarray, image_hw: tuple[int, int], scales: Sequence[int],
                  max_size: int = DEFAULT_MAX_SIZE) -> np.ndarray:
    """For each internal box of an image of size ``image_hw``, the index into ``scales``
    minimising |w h f_s^2 - 224^2|."""
    return nearest_scale(boxes, scale_factors(image_hw, scales, max_size))


def to_input_tensor(image_bgr: np.ndarray, scale: int, max_size: int,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Resize a BGR uint8 image and return a (1, 3, h, w) float tensor: RGB in [0, 1],
    normalised with the ImageNet mean and std."""
    h, w = image_bgr.shape[:2]
    nh, nw = resized_shape((h, w), scale, max_size)
    interp = cv2.INTER_AREA if nh < h else cv2.INTER_LINEAR
    # cvtColor swaps the channels 10x faster than copying numpy's reversed view; the
    # normalisation runs in place, in the same order of operations (the same values).
    rgb = cv2.cvtColor(cv2.resize(image_bgr, (nw, nh), interpolation=interp), cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(rgb).to(device).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)

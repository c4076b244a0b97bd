"""Window -> feature-map cells, by the SPP-net paper's appendix.

A cell j of a trunk with total stride S and centre offset o (``geometry.py``) is centred
at input pixel index ``S j + o`` (0-based). The appendix (written for o = 0) maps a window
whose left edge pixel is x to the left cell ``floor(x / S) + 1`` and one whose right edge
pixel is x to the right cell ``ceil(x / S) - 1``: the cells kept are those whose centres
lie strictly between the window's first and last pixels. We apply it in 0-based pixel
indices, where the appendix's "centred at (S x', S y')" holds exactly, with the offset
subtracted first:

    left  = floor((x1 - o) / S) + 1          x1: first pixel inside the window
    right = ceil((x2 - 1 - o) / S) - 1       x2 - 1: last pixel inside (x2 exclusive)

Cells are clamped to the map. Where a window collapses (left > right: narrower than
about two strides, or outside the map), it keeps one cell, the one whose centre is
nearest the window's centre (clamped to the map), rather than an empty region.
"""

from __future__ import annotations

import numpy as np
import torch

_EPS = 1e-6  # keeps exact multiples of S from tipping over through float error


def map_windows(boxes: torch.Tensor | np.ndarray, stride: int, offset: float,
                map_hw: tuple[int, int] | torch.Tensor | np.ndarray) -> torch.Tensor:
    """Map internal boxes (N, 4) in the resized image's pixels to inclusive cell boxes.

    ``map_hw`` is the map's (height, width), or one (height, width) per box, (N, 2).
    Returns a (N, 4) int64 tensor (x0, y0, x1, y1), 0 <= x0 <= x1 < W, 0 <= y0 <= y1 < H,
    on the boxes' device (``window_cells``, in numpy).
    """
    device = boxes.device if isinstance(boxes, torch.Tensor) else torch.device("cpu")
    return torch.from_numpy(window_cells(_numpy(boxes), stride, offset, _numpy(map_hw))).to(device)


def window_cells(boxes: np.ndarray, stride: int, offset: float, map_hw: tuple[int, int] | np.ndarray) -> np.ndarray:
    """``map_windows`` on numpy arrays: (N, 4) int64 inclusive cells (x0, y0, x1, y1)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    hw = np.asarray(map_hw, dtype=np.float64).reshape(-1, 2)
    first = b[:, :2]  # first pixel inside, x and y
    last = b[:, 2:] - 1.0  # last pixel inside
    lo = np.floor((first - offset) / stride + _EPS) + 1
    hi = np.ceil((last - offset) / stride - _EPS) - 1
    limit = hw[:, ::-1] - 1  # (width - 1, height - 1), per box or shared
    lo = np.minimum(np.maximum(lo, 0), limit)
    hi = np.minimum(np.maximum(hi, 0), limit)
    centre = np.floor(((first + last) / 2 - offset) / stride + 0.5)  # ties go right
    centre = np.minimum(np.maximum(centre, 0), limit)
    collapsed = lo > hi
    lo = np.where(collapsed, centre, lo)
    hi = np.where(collapsed, centre, hi)
    return np.concatenate([lo, hi], axis=1).astype(np.int64)


def scale_boxes(boxes: np.ndarray | torch.Tensor, factors_xy: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Boxes in original pixels -> boxes in the resized image (x by fx, y by fy), as a
    float64 tensor on the boxes' device (``scale_box_array``, in numpy).

    ``factors_xy`` is one (fx, fy) pair, or one pair per box, (N, 2).
    """
    device = boxes.device if isinstance(boxes, torch.Tensor) else torch.device("cpu")
    return torch.from_numpy(scale_box_array(_numpy(boxes), _numpy(factors_xy))).to(device)


def scale_box_array(boxes: np.ndarray, factors_xy: np.ndarray | tuple[float, float]) -> np.ndarray:
    """``scale_boxes`` on numpy arrays: (N, 4) float64."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    f = np.asarray(factors_xy, dtype=np.float64).reshape(-1, 2)
    return b * np.concatenate([f, f], axis=1)


def _numpy(v: torch.Tensor | np.ndarray | tuple[int, int]) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

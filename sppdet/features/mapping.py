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
    limit = hw[:, ::-1].T - 1  # (2, 1) or (2, N): width - 1, height - 1
    return np.ascontiguousarray(cell_rows(b.T, stride, offset, limit).T)


# Per side (x1, y1, x2, y2), as columns that broadcast along a row of N windows.
_SIDE_EPS = np.array([[_EPS], [_EPS], [-_EPS], [-_EPS]])
_SIDE_STEP = np.array([[1.0], [1.0], [-1.0], [-1.0]])


def cell_rows(sides: np.ndarray, stride: int, offset: float, limit: np.ndarray,
              out: np.ndarray | None = None) -> np.ndarray:
    """``window_cells`` with the boxes' sides as rows: ``sides`` (4, N) float64 (x1, y1, x2,
    y2 in the resized image's pixels), ``limit`` (2, 1) or (2, N) (width - 1, height - 1 of
    each box's map). Returns (4, N) int64 cells (x0, y0, x1, y1), in ``out`` when given.

    The same float operations as the formulas above, in place on contiguous rows: each call
    then covers every window (one side-pair or all four sides), which is several times fewer
    numpy calls than column slices of (N, 4) arrays need (this runs per image, after the conv
    has flushed the caches, where each call costs more than its arithmetic)."""
    v = np.array(sides, dtype=np.float64, order="C")  # a row-contiguous copy, worked on in place
    v[2:] -= 1.0  # last pixel inside
    centre = v[:2] + v[2:]  # of the first and last pixels, x and y
    centre /= 2
    centre -= offset
    centre /= stride
    centre += 0.5
    np.floor(centre, out=centre)  # ties go right
    v -= offset
    v /= stride
    v += _SIDE_EPS  # keeps exact multiples of the stride from tipping over
    np.floor(v[:2], out=v[:2])
    np.ceil(v[2:], out=v[2:])
    v += _SIDE_STEP  # left = floor(..) + 1, right = ceil(..) - 1
    np.maximum(v, 0, out=v)
    np.minimum(v, np.concatenate([limit, limit]), out=v)
    np.maximum(centre, 0, out=centre)
    np.minimum(centre, limit, out=centre)
    collapsed = v[:2] > v[2:]
    np.copyto(v[:2], centre, where=collapsed)
    np.copyto(v[2:], centre, where=collapsed)
    if out is None:
        return v.astype(np.int64)
    np.copyto(out, v, casting="unsafe")
    return out


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

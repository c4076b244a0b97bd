"""Window -> feature-map cells (the paper's appendix), against hand-computed cases and a
brute-force "cells whose centres lie strictly inside the window" reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sppdet.features.mapping import map_windows, scale_box_array, scale_boxes


def cells(box, stride=16, offset=0.0, map_hw=(10, 10)):
    return map_windows(np.array([box], dtype=np.float64), stride, offset, map_hw)[0].tolist()


@pytest.mark.parametrize("box, stride, offset, map_hw, expected", [
    # first pixel 0 -> floor(0/16)+1 = 1; last pixel 159 -> ceil(159/16)-1 = 9
    ((0, 0, 160, 160), 16, 0.0, (10, 10), [1, 1, 9, 9]),
    # x: 32 -> 3, 99 -> ceil(6.19)-1 = 6; y: 48 -> 4, 199 -> ceil(12.44)-1 = 12, clamped to 9
    ((32, 48, 100, 200), 16, 0.0, (10, 10), [3, 4, 6, 9]),
    # AlexNet-like offset 15: 0 -> floor(-15/16)+1 = 0; 223 -> ceil(208/16)-1 = 12
    ((0, 0, 224, 224), 16, 15.0, (13, 13), [0, 0, 12, 12]),
    # collapsed (20..29 px: left 2 > right 1): the cell nearest the centre 24.5 is 2 (at 32)
    ((20, 20, 30, 30), 16, 0.0, (10, 10), [2, 2, 2, 2]),
    # collapsed and outside the map on the right: clamped to the last column
    ((150, 0, 170, 10), 16, 0.0, (3, 5), [4, 0, 4, 0]),
    # stride 32: 64 -> 3, 255 -> ceil(7.97)-1 = 7
    ((64, 64, 256, 256), 32, 0.0, (20, 20), [3, 3, 7, 7]),
])
def test_hand_computed_cases(box, stride, offset, map_hw, expected):
    assert cells(box, stride, offset, map_hw) == expected


def brute_force(box, stride, offset, map_hw):
    """Cells whose centre (pixel index S j + o) lies strictly between the window's first
    and last pixels; else the single cell nearest the window's centre."""
    h, w = map_hw
    out = []
    for lo_px, hi_px, n in ((box[0], box[2] - 1, w), (box[1], box[3] - 1, h)):
        centres = stride * np.arange(n) + offset
        inside = np.nonzero((centres > lo_px) & (centres < hi_px))[0]
        if len(inside):
            out.append((inside.min(), inside.max()))
        else:
            j = int(np.argmin(np.abs(centres - (lo_px + hi_px) / 2)))
            out.append((j, j))
    return [out[0][0], out[1][0], out[0][1], out[1][1]]


@pytest.mark.parametrize("stride, offset", [(16, 0.0), (16, 15.0), (16, 7.5), (32, 0.0), (8, 3.0)])
def test_random_windows_match_brute_force(stride, offset):
    rng = np.random.default_rng(stride + int(offset * 2))
    map_hw = (23, 31)
    n = 400
    x1 = rng.uniform(0, 31 * stride, n)
    y1 = rng.uniform(0, 23 * stride, n)
    x2 = x1 + rng.uniform(1, 12 * stride, n)
    y2 = y1 + rng.uniform(1, 12 * stride, n)
    boxes = np.stack([x1, y1, x2, y2], axis=1)
    got = map_windows(boxes, stride, offset, map_hw).numpy()
    want = np.array([brute_force(b, stride, offset, map_hw) for b in boxes])
    # The brute force keeps the nearest cell only for windows with no centre inside; a
    # window whose inside cells all lie beyond the map is clamped instead: compare the rest.
    inside_map = (want[:, 2] < map_hw[1]) & (want[:, 3] < map_hw[0])
    assert inside_map.sum() > n // 2
    single = inside_map & (want[:, 0] == want[:, 2])
    assert single.sum() >= 5  # collapsed windows are among those compared
    np.testing.assert_array_equal(got[inside_map], want[inside_map])


def test_output_always_valid_cells():
    rng = np.random.default_rng(1)
    boxes = rng.uniform(-100, 900, (1000, 4))
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(0.5, 600, (1000, 2))
    h, w = 7, 11
    c = map_windows(boxes, 16, 0.0, (h, w)).numpy()
    assert (c[:, 0] >= 0).all() and (c[:, 0] <= c[:, 2]).all() and (c[:, 2] < w).all()
    assert (c[:, 1] >= 0).all() and (c[:, 1] <= c[:, 3]).all() and (c[:, 3] < h).all()


def test_per_box_map_sizes_and_scaling():
    boxes = np.array([[0, 0, 160, 160], [0, 0, 160, 160]], dtype=np.float64)
    got = map_windows(boxes, 16, 0.0, np.array([[10, 10], [4, 6]])).tolist()
    assert got == [[1, 1, 9, 9], [1, 1, 5, 3]]
    scaled = scale_boxes(np.array([[10, 20, 30, 40]]), np.array([2.0, 0.5]))
    assert scaled.tolist() == [[20.0, 10.0, 60.0, 20.0]]
    per_box = scale_boxes(boxes, np.array([[1.0, 1.0], [0.5, 2.0]]))
    assert per_box[1].tolist() == [0.0, 0.0, 80.0, 320.0]
    assert isinstance(per_box, torch.Tensor)
    assert scale_box_array(boxes, np.array([[1.0, 1.0], [0.5, 2.0]])).tolist() == per_box.tolist()
    assert scale_box_array(np.array([[10, 20, 30, 40]]), (2.0, 0.5)).tolist() == [[20.0, 10.0, 60.0, 20.0]]

"""Box conversion and post-processing against hand-computed and brute-force references."""

from __future__ import annotations

import numpy as np
import pytest

from proposals.postprocess import (
    clip_boxes,
    downscale_image,
    finalize,
    first_unique_mask,
    min_side_mask,
    rank_scores,
    scale_boxes,
    xywh_to_xyxy,
)


def test_xywh_to_xyxy_hand_computed():
    # OpenCV rect x=3, y=5, w=10, h=2 covers pixels 3..12 x 5..6 -> [3, 13) x [5, 7).
    out = xywh_to_xyxy(np.array([[3, 5, 10, 2], [0, 0, 1, 1]]))
    np.testing.assert_array_equal(out, [[3, 5, 13, 7], [0, 0, 1, 1]])
    # Area equals the number of covered pixels, w * h.
    assert (out[0, 2] - out[0, 0]) * (out[0, 3] - out[0, 1]) == 20


def test_xywh_matches_sppdet_convention():
    sppdet_boxes = pytest.importorskip("sppdet.boxes")
    b = np.random.default_rng(0).integers(0, 100, (50, 4))
    np.testing.assert_array_equal(xywh_to_xyxy(b), sppdet_boxes.xywh_to_xyxy(b))


def test_clip_and_min_side():
    b = np.array([[-5, -3, 20, 30], [150, 100, 170, 130], [10, 10, 14, 40]], dtype=float)
    c = clip_boxes(b, width=160, height=120)
    np.testing.assert_array_equal(c, [[0, 0, 20, 30], [150, 100, 160, 120], [10, 10, 14, 40]])
    np.testing.assert_array_equal(min_side_mask(c, 5), [True, True, False])
    np.testing.assert_array_equal(min_side_mask(np.array([[5, 5, 5, 9.0]]), 0), [False])


def test_first_unique_mask_matches_brute_force():
    rng = np.random.default_rng(1)
    b = rng.integers(0, 6, (300, 4)).astype(float) + rng.uniform(-0.3, 0.3, (300, 4))
    seen, expected = set(), []
    for row in np.round(b).astype(int):
        key = tuple(row)
        expected.append(key not in seen)
        seen.add(key)
    np.testing.assert_array_equal(first_unique_mask(b), expected)
    assert first_unique_mask(np.zeros((0, 4))).shape == (0,)


def test_downscale_and_scale_back():
    img = np.zeros((300, 1000, 3), np.uint8)
    small, (sx, sy) = downscale_image(img, 500)
    assert small.shape[:2] == (150, 500) and (sx, sy) == (2.0, 2.0)
    back = scale_boxes(np.array([[10, 20, 250, 150]]), (sx, sy))
    np.testing.assert_array_equal(back, [[20, 40, 500, 300]])
    same, f = downscale_image(img, 0)
    assert same is img and f == (1.0, 1.0)
    same, f = downscale_image(img, 1000)
    assert same is img and f == (1.0, 1.0)


def test_finalize_keeps_order_and_applies_every_rule():
    boxes = np.array([
        [0, 0, 10, 10],     # kept (first)
        [-4, 0, 10, 10],    # clipped to a duplicate of the first -> dropped
        [5, 5, 7, 30],      # too narrow -> dropped
        [20, 20, 60, 60],   # kept
        [20.2, 20, 60, 59.8],  # duplicate after rounding -> dropped
        [30, 30, 90, 90],   # kept
        [1, 1, 40, 40],     # beyond max_boxes
    ], dtype=float)
    scores = np.arange(7, 0, -1, dtype=float)
    p = finalize(boxes / 2, scores, scale=(2.0, 2.0), width=160, height=120,
                 min_side=5, dedupe=True, max_boxes=3)
    np.testing.assert_allclose(p.boxes, [[0, 0, 10, 10], [20, 20, 60, 60], [30, 30, 90, 90]])
    np.testing.assert_array_equal(p.scores, [7, 4, 2])
    assert p.boxes.dtype == np.float32 and p.scores.dtype == np.float32
    q = finalize(boxes, scores, scale=(1, 1), width=160, height=120, min_side=0, dedupe=False,
                 max_boxes=100)
    assert len(q) == 7


def test_finalize_empty_and_rank_scores():
    p = finalize(np.zeros((0, 4)), np.zeros(0), scale=(1, 1), width=5, height=5, min_side=0,
                 dedupe=True, max_boxes=10)
    assert p.boxes.shape == (0, 4) and p.scores.shape == (0,)
    np.testing.assert_allclose(rank_scores(4), [1, 0.75, 0.5, 0.25])

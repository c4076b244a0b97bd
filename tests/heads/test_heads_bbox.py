"""Box regression: targets by hand, the round trip, and a fit that recovers boxes."""

from __future__ import annotations

import numpy as np
import pytest

from sppdet.boxes import box_iou
from sppdet.heads.bbox_regression import BoxRegressor, apply_deltas, bbox_targets, fit_box_regressor


def test_targets_by_hand():
    p = np.array([[10.0, 20.0, 30.0, 60.0]])  # centre (20, 40), size 20 x 40
    g = np.array([[15.0, 10.0, 55.0, 50.0]])  # centre (35, 30), size 40 x 40
    np.testing.assert_allclose(bbox_targets(p, g), [[15 / 20, -10 / 40, np.log(2.0), 0.0]])


def test_targets_round_trip_to_boxes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (200, 2))
    p = np.concatenate([xy, xy + rng.uniform(10, 300, (200, 2))], axis=1)
    xy = rng.uniform(0, 500, (200, 2))
    g = np.concatenate([xy, xy + rng.uniform(10, 300, (200, 2))], axis=1)
    np.testing.assert_allclose(apply_deltas(p, bbox_targets(p, g)), g, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(apply_deltas(p, np.zeros((200, 4))), p, atol=1e-9)
    with pytest.raises(ValueError):
        bbox_targets(np.array([[0.0, 0, 0, 10]]), np.array([[0.0, 0, 5, 5]]))


def test_fit_recovers_boxes_from_linear_features():
    """Features that linearly encode the targets: the regressor must move boxes onto GT."""
    rng = np.random.default_rng(1)
    n, dim = 400, 12
    gt = np.tile([[100.0, 100.0, 200.0, 180.0]], (n, 1))
    w, h = 100.0, 80.0
    p = gt + rng.uniform(-0.15, 0.15, (n, 4)) * np.array([w, h, w, h])
    t = bbox_targets(p, gt)
    mix = rng.normal(size=(4, dim))
    x = (t @ mix + 0.5 + rng.normal(0, 1e-4, (n, dim))).astype(np.float32)
    empty = (np.zeros((0, dim), np.float32), np.zeros((0, 4)), np.zeros((0, 4)))
    reg, counts = fit_box_regressor([empty, (x, p, gt)], dim, lam=1e-6)
    assert counts == [0, n]
    out = reg.predict(x, p, 1)
    assert np.median(box_iou(out, gt[:1])[:, 0]) > 0.99
    assert np.median(box_iou(p, gt[:1])[:, 0]) < 0.8
    # Class 0 had no windows: boxes are unchanged. All-class output agrees per class.
    np.testing.assert_allclose(reg.predict(x, p, 0), p)
    both = reg.predict(x, p, None)
    assert both.shape == (n, 2, 4)
    np.testing.assert_allclose(both[:, 1], out)
    per_box = reg.predict(x, p, np.arange(n) % 2)
    np.testing.assert_allclose(per_box[1::2], out[1::2])
    np.testing.assert_allclose(per_box[0::2], p[0::2])


def test_normalised_targets_are_denormalised():
    W = np.zeros((1, 3, 4), np.float32)
    b = np.array([[1.0, -1.0, 0.0, 0.5]], np.float32)
    mean = np.array([[0.1, 0.2, 0.0, 0.0]], np.float32)
    std = np.array([[0.5, 0.5, 1.0, 2.0]], np.float32)
    reg = BoxRegressor(W, b, mean, std)
    np.testing.assert_allclose(reg.deltas(np.ones((2, 3)))[0, 0], [0.6, -0.3, 0.0, 1.0], rtol=1e-6)

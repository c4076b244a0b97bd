"""The liblinear SVM wrapper: separation, the bias feature, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.svm import LinearSVC

from sppdet.heads.svm import SVMParams, fit_linear_svm


def blobs(seed: int, n_pos: int = 60, n_neg: int = 300, dim: int = 16, gap: float = 3.0,
          direction_seed: int = 0):
    direction = np.random.default_rng(direction_seed).normal(size=dim)
    rng = np.random.default_rng(seed + 1)
    direction /= np.linalg.norm(direction)
    pos = rng.normal(0, 0.3, (n_pos, dim)) + gap * direction
    neg = rng.normal(0, 0.3, (n_neg, dim)) - gap * direction
    # Push every point beyond |projection| >= 1 so the classes are linearly separable.
    for x, sign in ((pos, 1), (neg, -1)):
        proj = x @ direction
        x += np.maximum(0, 1.0 - sign * proj)[:, None] * sign * direction
    return pos.astype(np.float32), neg.astype(np.float32)


def test_svm_separates_separable_features():
    pos, neg = blobs(0)
    fit = fit_linear_svm(pos * 5, neg * 5, SVMParams())  # scale up: C = 0.001 is weak
    assert fit.converged
    assert np.all(pos * 5 @ fit.w + fit.b > 0)
    assert np.all(neg * 5 @ fit.w + fit.b < 0)
    # Held-out points from the same distributions are separated too.
    pos2, neg2 = blobs(1)
    assert np.all(pos2 * 5 @ fit.w + fit.b > 0) and np.all(neg2 * 5 @ fit.w + fit.b < 0)


def test_bias_is_bias_feature_weight_times_its_value():
    """LinearSVC's intercept equals an explicit liblinear fit on [x, 10] (R-CNN's -B 10)."""
    pos, neg = blobs(2, gap=1.0)
    params = SVMParams(tol=1e-6, max_iter=100000)
    fit = fit_linear_svm(pos, neg, params)
    x = np.concatenate([pos, neg]).astype(np.float64)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    aug = np.concatenate([x, np.full((len(x), 1), params.bias_mult)], axis=1)
    manual = LinearSVC(loss="hinge", dual=True, C=params.C, class_weight={1: 2.0, 0: 1.0},
                       fit_intercept=False, tol=1e-6, max_iter=100000, random_state=0).fit(aug, y)
    w_manual, w_bias = manual.coef_[0, :-1], manual.coef_[0, -1]
    np.testing.assert_allclose(fit.w, w_manual, rtol=1e-3, atol=1e-5)
    assert fit.b == pytest.approx(params.bias_mult * w_bias, rel=1e-3, abs=1e-6)
    # And the scores are simply x @ w + b, as sklearn's own decision function.
    np.testing.assert_allclose(x @ fit.w + fit.b, manual.decision_function(aug), rtol=1e-3, atol=1e-4)


def test_positive_weight_moves_the_boundary_towards_negatives():
    pos, neg = blobs(3, gap=0.2)  # overlapping classes: the weight matters
    lo = fit_linear_svm(pos, neg, SVMParams(pos_weight=1.0))
    hi = fit_linear_svm(pos, neg, SVMParams(pos_weight=8.0))
    x = np.concatenate([pos, neg])
    assert (x @ hi.w + hi.b > 0).sum() > (x @ lo.w + lo.b > 0).sum()


def test_fit_is_deterministic_and_needs_both_classes():
    pos, neg = blobs(4)
    a, b = fit_linear_svm(pos, neg), fit_linear_svm(pos, neg)
    assert np.array_equal(a.w, b.w) and a.b == b.b
    with pytest.raises(ValueError):
        fit_linear_svm(pos[:0], neg)

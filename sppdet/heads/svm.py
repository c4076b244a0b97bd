"""One linear SVM: liblinear's L2-regularised L1-loss (hinge) dual solver, R-CNN's settings.

R-CNN calls liblinear with ``-s 3 -c 0.001 -w1 2 -B 10``: hinge loss, dual solver,
C = 0.001, positive examples weighted 2, and a constant bias feature of value 10 appended
to every example, so the learned bias is 10 times the bias feature's weight (and is
regularised like any other weight). scikit-learn's ``LinearSVC`` wraps the same liblinear
with ``intercept_scaling`` as the bias feature; its ``intercept_`` is already
``intercept_scaling * w_bias`` (tests check this against an explicit augmented-feature fit),
so scores are simply ``X @ w + b``. liblinear's default stopping tolerance for this solver
is 0.1 (scikit-learn's default, 1e-4, is much stricter and slower); 0.1 is the default here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from sppdet.errors import ArgumentError


@dataclass(frozen=True)
class SVMParams:
    """liblinear settings (defaults: R-CNN / SPP-net)."""

    C: float = 0.001
    pos_weight: float = 2.0
    bias_mult: float = 10.0
    tol: float = 0.1
    max_iter: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class SVMFit:
    """A trained linear SVM: score = x @ w + b."""

    w: np.ndarray  # (D,) float32
    b: float
    converged: bool


def fit_linear_svm(x_pos: np.ndarray, x_neg: np.ndarray, params: SVMParams = SVMParams()) -> SVMFit:
    """Train on positives (P, D) and negatives (N, D); both must be non-empty."""
    if len(x_pos) == 0 or len(x_neg) == 0:
        raise ArgumentError(f"an SVM needs positives and negatives (got {len(x_pos)} and {len(x_neg)})")
    x = np.concatenate([np.asarray(x_pos, np.float64), np.asarray(x_neg, np.float64)])
    y = np.concatenate([np.ones(len(x_pos), np.int64), np.zeros(len(x_neg), np.int64)])
    svc = LinearSVC(loss="hinge", dual=True, C=params.C, class_weight={1: params.pos_weight, 0: 1.0},
                    fit_intercept=True, intercept_scaling=params.bias_mult, tol=params.tol,
                    max_iter=params.max_iter, random_state=params.seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svc.fit(x, y)
    converged = True
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            converged = False
        else:  # pass on anything else
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return SVMFit(svc.coef_[0].astype(np.float32), float(svc.intercept_[0]), converged)

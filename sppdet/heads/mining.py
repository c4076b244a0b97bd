"""Hard-negative mining for all classes at once, in one pass over the training images.

R-CNN's ``rcnn_train.m`` (also SPP-net's): every class starts with a zero model, so the
first image(s) fill its cache with all their negatives (score 0 > -1.0001); afterwards a
negative enters the cache only if the current model scores it above ``hard_thresh``.
When a class has accumulated more than ``retrain_every`` new negatives (and once at the
end) its SVM is retrained on all positives plus the cached negatives, and cached
negatives scoring below ``evict_thresh`` are evicted. Here each image's features are
pooled once and scored against all classes' SVMs with one matrix product.

Negatives are proposals (and, as in R-CNN, other classes' ground-truth boxes) whose IoU
with every ground-truth box of the class is below ``neg_iou``. ``max_negatives`` bounds a
class's cache after eviction (keeping the highest-scoring, i.e. hardest); the reference
code has no such cap, so it only matters when eviction cannot keep up.

Opt-in (``collapse_share`` > 0; off by default, as in the reference): a class with fewer
than ``collapse_share`` of its training positives scoring above 0 after a fit is refitted
with C ten times larger, at most ``max_c_boosts`` times; the larger C then stays for that
class's later retrains and is recorded per class (``svm_c``). On the development split
(fc7, C = 0.01) this cost 0.6 mAP: classes such as chair rank well (AP 24) with almost no
training positive above 0, and a larger C hurt diningtable and pottedplant.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from sppdet.heads.svm import SVMFit, SVMParams, fit_linear_svm


@dataclass(frozen=True)
class MiningParams:
    """Hard-negative mining settings (defaults: R-CNN / SPP-net)."""

    neg_iou: float = 0.3
    hard_thresh: float = -1.0001
    evict_thresh: float = -1.2
    retrain_every: int = 2000
    max_negatives: int | None = 20000
    gt_negatives: bool = True
    collapse_share: float = 0.0
    max_c_boosts: int = 2


# Factor by which C grows for a class whose SVM collapsed (see the module docstring).
C_BOOST = 10.0


@dataclass
class ClassStats:
    """What mining did for one class."""

    positives: int = 0
    negatives_added: int = 0
    negatives_evicted: int = 0
    negatives_capped: int = 0
    negatives_kept: int = 0
    retrains: int = 0
    not_converged: int = 0
    fit_seconds: float = 0.0
    # Share of the class's training positives scoring above 0 after the last fit; near 0
    # means the SVM has collapsed to its bias (C too small for the data).
    positives_above_zero: float = -1.0
    svm_c: float = 0.0  # the class's liblinear C (the run's C unless boosted)
    c_boosts: int = 0  # times C was multiplied by C_BOOST after a collapse

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) and k != "svm_c" else v)
                for k, v in self.__dict__.items()}


@dataclass
class NegativeCache:
    """One class's working set of negatives: features and (image index, window row) keys."""

    dim: int
    dtype: np.dtype = np.dtype(np.float16)
    feats: np.ndarray = field(init=False)
    keys: np.ndarray = field(init=False)
    num_added: int = 0  # since the last retrain
    _pending: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.feats = np.zeros((0, self.dim), self.dtype)
        self.keys = np.zeros((0, 2), np.int64)

    def add(self, x: np.ndarray, keys: np.ndarray) -> None:
        if len(x):
            self._pending.append((x.astype(self.dtype), keys))
            self.num_added += len(x)

    def consolidate(self) -> None:
        if self._pending:
            self.feats = np.concatenate([self.feats] + [p[0] for p in self._pending])
            self.keys = np.concatenate([self.keys] + [p[1] for p in self._pending])
            self._pending = []

    def keep(self, rows: np.ndarray) -> None:
        self.feats, self.keys = self.feats[rows], self.keys[rows]

    def __len__(self) -> int:
        return len(self.feats) + sum(len(p[0]) for p in self._pending)


class HardNegativeMiner:
    """State of one mining pass: per-class SVMs, negative caches and statistics.

    ``positives[c]`` holds class c's positive features (already in SVM feature space);
    a class without positives is never trained and scores ``-inf``.
    """

    def __init__(self, positives: list[np.ndarray], dim: int,
                 mining: MiningParams = MiningParams(), svm: SVMParams = SVMParams(),
                 cache_dtype: np.dtype = np.float16) -> None:
        self.positives = positives
        self.mining = mining
        self.svm = svm
        self.num_classes = len(positives)
        self.W = np.zeros((self.num_classes, dim), np.float32)
        self.b = np.zeros(self.num_classes, np.float64)
        self.trainable = np.array([len(p) > 0 for p in positives])
        self.b[~self.trainable] = -np.inf
        self.caches = [NegativeCache(dim, np.dtype(cache_dtype)) for _ in positives]
        self.stats = [ClassStats(positives=len(p), svm_c=svm.C) for p in positives]
        self._just_retrained: list[int] = []

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(N, C) current SVM scores of features ``x`` (N, D)."""
        return (np.asarray(x, np.float32) @ self.W.T).astype(np.float64) + self.b

    def observe(self, image_index: int, x: np.ndarray, overlaps: np.ndarray,
                is_gt: np.ndarray | None = None) -> list[int]:
        """Add one image's hard negatives; retrain classes that reached ``retrain_every``.

        ``x`` (N, D) are the image's window features in SVM space, ``overlaps`` (N, C)
        each window's max IoU with the class's ground truth, ``is_gt`` (N,) marks
        ground-truth rows. Returns the classes retrained.
        """
        m = self.mining
        cand = overlaps < m.neg_iou
        if is_gt is not None and not m.gt_negatives:
            cand &= ~np.asarray(is_gt, bool)[:, None]
        cand &= self.trainable[None, :]
        if not cand.any():
            self._just_retrained = []
            return []
        hard = cand & (self.scores(x) > m.hard_thresh)
        retrained: list[int] = []
        self._just_retrained = retrained
        for c in np.flatnonzero(hard.any(axis=0)):
            rows = np.flatnonzero(hard[:, c])
            keys = np.stack([np.full(len(rows), image_index, np.int64), rows.astype(np.int64)], 1)
            self.caches[c].add(x[rows], keys)
            self.stats[c].negatives_added += len(rows)
            if self.caches[c].num_added > m.retrain_every:
                self.retrain(int(c))
                retrained.append(int(c))
        return retrained

    def retrain(self, c: int) -> None:
        """Retrain class ``c`` on its positives and cached negatives, then evict easy ones."""
        cache, st = self.caches[c], self.stats[c]
        cache.consolidate()
        if not self.trainable[c] or len(cache) == 0:
            cache.num_added = 0
            return
        t0 = time.perf_counter()
        fit = self._fit(c)
        while st.positives_above_zero < self.mining.collapse_share and st.c_boosts < self.mining.max_c_boosts:
            st.svm_c *= C_BOOST  # collapsed to its bias: C too small for this class
            st.c_boosts += 1
            fit = self._fit(c)
        self.W[c], self.b[c] = fit.w, fit.b
        st.fit_seconds += time.perf_counter() - t0
        st.retrains += 1
        cache.num_added = 0
        z = (cache.feats.astype(np.float32) @ fit.w).astype(np.float64) + fit.b
        keep = np.flatnonzero(z >= self.mining.evict_thresh)
        st.negatives_evicted += len(z) - len(keep)
        cap = self.mining.max_negatives
        if cap is not None and len(keep) > cap:
            # Keep the hardest: highest score first, ties by cache order (deterministic).
            order = np.argsort(-z[keep], kind="stable")[:cap]
            st.negatives_capped += len(keep) - cap
            keep = np.sort(keep[order])
        cache.keep(keep)
        st.negatives_kept = len(cache)

    def _fit(self, c: int) -> SVMFit:
        """Fit class ``c`` at its current C; updates its convergence and positive-share stats."""
        st = self.stats[c]
        fit = fit_linear_svm(self.positives[c], self.caches[c].feats, replace(self.svm, C=st.svm_c))
        st.not_converged += int(not fit.converged)
        pos_scores = (np.asarray(self.positives[c], np.float32) @ fit.w).astype(np.float64) + fit.b
        st.positives_above_zero = float(np.mean(pos_scores > 0)) if len(pos_scores) else -1.0
        return fit

    def finish(self, progress: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Final retrain of every trainable class; returns (W (C, D) float32, b (C,) float32).

        As in the reference, each class is retrained once at the last image: a class that
        the last ``observe`` call has just retrained is not retrained again.
        """
        classes = range(self.num_classes) if progress is None else progress(range(self.num_classes))
        for c in classes:
            if self.trainable[c] and c not in self._just_retrained:
                self.retrain(c)
            if self.stats[c].retrains == 0:  # no positives or no negatives: never fires
                self.W[c], self.b[c] = 0.0, -np.inf
        return self.W.copy(), self.b.astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that, with the cached negatives' features, restore the miner (checkpoints).

        Features are not included: ``keys_<c>`` (image index, window row) name them.
        """
        out: dict[str, np.ndarray] = {"W": self.W, "b": self.b,
                                      "num_added": np.array([c.num_added for c in self.caches]),
                                      "stats": np.array(json.dumps([s.__dict__ for s in self.stats]))}
        for c, cache in enumerate(self.caches):
            cache.consolidate()
            out[f"keys_{c}"] = cache.keys
        return out

    def restore(self, state: dict[str, np.ndarray], feats: list[np.ndarray]) -> None:
        """Undo ``state()``: ``feats[c]`` are class c's cached features in ``keys_<c>`` order."""
        self.W = np.array(state["W"], np.float32)
        self.b = np.array(state["b"], np.float64)
        for c, cache in enumerate(self.caches):
            cache.feats = np.asarray(feats[c]).astype(cache.dtype, copy=False)
            cache.keys = np.asarray(state[f"keys_{c}"], np.int64).reshape(-1, 2)
            cache._pending = []
            cache.num_added = int(state["num_added"][c])
        self.stats = [ClassStats(**d) for d in json.loads(str(state["stats"]))]
        self._just_retrained = []

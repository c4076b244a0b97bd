"""The bounded reservoir sample."""

from __future__ import annotations

import numpy as np

from sppdet.heads.reservoir import Reservoir


def feed(res: Reservoir, total: int, chunk: int) -> None:
    for s in range(0, total, chunk):
        ids = np.arange(s, min(total, s + chunk))
        res.add(np.repeat(ids[:, None], 3, axis=1).astype(np.float32), ids=ids)


def make(capacity, seed=0):
    return Reservoir(3, capacity, np.random.default_rng(seed), dtype=np.float32,
                     extras={"ids": ((), np.int64)})


def test_reservoir_is_bounded_aligned_and_deterministic():
    a, b = make(50), make(50)
    feed(a, 1000, 37)
    feed(b, 1000, 37)
    xa, ea = a.arrays()
    assert len(xa) == 50 and a.seen == 1000
    np.testing.assert_array_equal(xa[:, 0], ea["ids"])  # rows and extras stay aligned
    assert len(set(ea["ids"].tolist())) == 50
    np.testing.assert_array_equal(xa, b.arrays()[0])


def test_unbounded_and_under_capacity_keep_everything_in_order():
    for cap in (None, 5000):
        r = make(cap)
        feed(r, 300, 64)
        np.testing.assert_array_equal(r.arrays()[1]["ids"], np.arange(300))


def test_reservoir_sample_is_uniform():
    """Each stream item is kept with probability capacity / n (chi-square style check)."""
    counts = np.zeros(200)
    for seed in range(300):
        r = make(20, seed)
        feed(r, 200, 23)
        counts[r.arrays()[1]["ids"]] += 1
    expected = 300 * 20 / 200  # 30
    assert abs(counts[:100].mean() - expected) < 3 and abs(counts[100:].mean() - expected) < 3
    assert counts.min() > 10 and counts.max() < 55

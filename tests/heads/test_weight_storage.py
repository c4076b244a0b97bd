"""Weight storage: int8 per-row quantisation and float16, against element-wise references."""

from __future__ import annotations

import numpy as np
import pytest

from sppdet.heads.weight_storage import decode, encode, quantize_int8


def test_int8_rows_round_to_their_own_step():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (6, 40)).astype(np.float32) * np.array([1e-3, 0.1, 1, 10, 100, 0], np.float32)[:, None]
    q, scale = quantize_int8(a)
    assert q.dtype == np.int8 and scale.shape == (6,)
    back = decode(encode({"w": a}, "int8"))["w"]
    for r in range(6):
        step = np.abs(a[r]).max() / 127
        if step == 0:  # an all-zero row stays exactly zero
            assert np.all(back[r] == 0)
            continue
        assert np.abs(back[r] - a[r]).max() <= step / 2 * (1 + 1e-5)
        assert np.abs(q[r]).max() == 127  # the largest weight of each row uses the full range
        for j in range(0, 40, 7):  # element-wise: the nearest multiple of the step
            assert back[r, j] == pytest.approx(round(float(a[r, j]) / step) * step, rel=1e-5, abs=1e-12)


def test_three_dimensional_arrays_have_one_scale_per_leading_index():
    a = np.random.default_rng(1).normal(0, 1, (3, 5, 4)).astype(np.float32)
    a[1] *= 50
    stored = encode({"bbox_W": a}, "int8")
    assert stored["bbox_W__scale"].shape == (3,)
    np.testing.assert_allclose(stored["bbox_W__scale"], np.abs(a).max(axis=(1, 2)) / 127, rtol=1e-6)
    assert np.all(np.abs(decode(stored)["bbox_W"] - a).max(axis=(1, 2)) <= stored["bbox_W__scale"] / 2 * 1.00001)


@pytest.mark.parametrize("storage", ["float32", "float16", "int8"])
def test_biases_and_kept_names_stay_float32(storage):
    arrays = {"b": np.linspace(-1, 1, 7, dtype=np.float32), "mean": np.ones((2, 4), np.float32) / 3,
              "W": np.full((2, 3), 0.1, np.float32)}
    stored = encode(arrays, storage, keep_float32=("mean",))
    assert stored["b"].dtype == np.float32 and stored["mean"].dtype == np.float32
    assert stored["W"].dtype == {"float32": np.float32, "float16": np.float16, "int8": np.int8}[storage]
    out = decode(stored)
    assert set(out) == set(arrays) and all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_array_equal(out["b"], arrays["b"])


def test_unknown_storage_is_refused():
    with pytest.raises(ValueError, match="storage"):
        encode({"w": np.zeros((2, 2))}, "int4")


def test_low_rank_storage_is_the_truncated_svd():
    """Stored at rank t, a matrix reads back as its best rank-t approximation (Eckart-Young:
    the Frobenius error is the norm of the dropped singular values); at full rank, itself."""
    rng = np.random.default_rng(3)
    a = (rng.normal(0, 1, (30, 8)) @ rng.normal(0, 1, (8, 50)) + rng.normal(0, 0.05, (30, 50))).astype(np.float32)
    sv = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    for t in (3, 8):
        stored = encode({"fc6.weight": a, "b": np.zeros(30, np.float32)}, "float32", ranks={"fc6.weight": t})
        assert stored["fc6.weight__lr_u"].shape == (30, t) and stored["fc6.weight__lr_v"].shape == (t, 50)
        back = decode(stored)
        assert set(back) == {"fc6.weight", "b"}
        err = np.linalg.norm(back["fc6.weight"] - a)
        assert err == pytest.approx(np.sqrt((sv[t:] ** 2).sum()), rel=1e-3)
    full = decode(encode({"w": a}, "float32", ranks={"w": 100}))["w"]
    np.testing.assert_allclose(full, a, atol=1e-4)
    int8 = decode(encode({"w": a}, "int8", ranks={"w": 8}))["w"]  # factors rounded to int8 too
    assert np.linalg.norm(int8 - a) < 0.02 * np.linalg.norm(a)


def test_input_aware_factors_reach_the_optimal_error_on_their_inputs():
    """On anisotropic inputs, E||(W - W_t) x||^2 equals the sum of the dropped squared
    singular values of W M^1/2 (the optimum over rank-t matrices) and beats a plain SVD."""
    from sppdet.heads.weight_storage import input_aware_factors, low_rank_factors

    rng = np.random.default_rng(4)
    w = rng.normal(0, 1, (20, 40))
    x = rng.normal(0, 1, (5000, 40)) * np.geomspace(10, 0.01, 40)  # a few dominant directions
    m = x.T @ x / len(x)
    ev, q = np.linalg.eigh(m)
    sv = np.linalg.svd(w @ ((q * np.sqrt(ev)) @ q.T), compute_uv=False)
    for t in (3, 8):
        u, v = input_aware_factors(w, x, t)
        assert u.shape == (20, t) and v.shape == (t, 40)
        err = np.mean(np.sum(((w - u.astype(np.float64) @ v) @ x.T) ** 2, axis=0))
        assert err == pytest.approx((sv[t:] ** 2).sum(), rel=1e-3)
        pu, pv = low_rank_factors(w, t)
        plain = np.mean(np.sum(((w - pu.astype(np.float64) @ pv) @ x.T) ** 2, axis=0))
        assert err < 0.5 * plain

"""How a model's weight arrays are stored on disk: float32, float16, or int8 with scales.

int8 storage is symmetric and per row: an array ``a`` of shape (R, ...) is stored as
``q = round(a / s)`` (int8, in [-127, 127]) under its own name and ``s`` (R,) float32,
``s = max |a[r]| / 127``, under ``<name>__scale``; reading gives ``q * s`` as float32.
Rows are output units for fc layers and classes for SVMs and box regressors, so every
output is computed with weights rounded to 1/254 of its own largest weight.
Reading always returns float32 arrays, whatever the storage.

A large matrix can also be stored at a lower rank (Fast R-CNN's truncated SVD of fc6):
``W (R, K) ~ (U_t S_t) V_t``, kept as ``<name>__lr_u`` (R, t) and ``<name>__lr_v`` (t, K),
each in the chosen storage; reading multiplies them back into the full (R, K) matrix, so
the model's layers and arithmetic do not change. Given a sample of the layer's inputs x
(second moment M = E[x x^T]), ``input_aware_factors`` minimises the error on those inputs,
E ||(W - W_t) x||^2, instead of ||W - W_t||_F: W_t = (W M^1/2)_t M^-1/2, the truncated SVD
in whitened input coordinates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from sppdet.errors import ArgumentError

STORAGES = ("float32", "float16", "int8")
SCALE_SUFFIX = "__scale"
LOW_RANK_U, LOW_RANK_V = "__lr_u", "__lr_v"
INT8_MAX = 127


def quantize_int8(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 quantisation of ``a`` (R, ...): returns (q int8, scale (R,) float32)."""
    a = np.asarray(a, np.float32)
    if a.ndim < 2:
        raise ArgumentError(f"int8 storage needs an array with rows, got shape {a.shape}")
    peak = np.abs(a.reshape(len(a), -1)).max(axis=1) if a.size else np.zeros(len(a), np.float32)
    scale = np.where(peak > 0, peak / INT8_MAX, 1.0).astype(np.float32)
    q = np.rint(a / scale.reshape((-1,) + (1,) * (a.ndim - 1)))
    return np.clip(q, -INT8_MAX, INT8_MAX).astype(np.int8), scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Undo ``quantize_int8`` (up to its rounding): float32 ``q * scale`` per row."""
    return q.astype(np.float32) * np.asarray(scale, np.float32).reshape((-1,) + (1,) * (q.ndim - 1))


def low_rank_factors(a: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Truncated SVD of a 2-D ``a`` (R, K): (U_t S_t (R, t), V_t (t, K)), t = min(rank, R, K)."""
    u, s, vt = np.linalg.svd(np.asarray(a, np.float64), full_matrices=False)
    t = min(rank, len(s))
    return (u[:, :t] * s[:t]).astype(np.float32), vt[:t].astype(np.float32)


def input_aware_factors(a: np.ndarray, inputs: np.ndarray, rank: int,
                        eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Rank-``rank`` factors (U (R, t), V (t, K)) of ``a`` (R, K) minimising the error on the
    sampled ``inputs`` (N, K): the truncated SVD of ``a @ M^1/2`` mapped back by ``M^-1/2``,
    M = inputs^T inputs / N (eigenvalues floored at ``eps`` times the largest)."""
    x = np.asarray(inputs, np.float64)
    ev, q = np.linalg.eigh(x.T @ x / len(x))
    ev = np.maximum(ev, ev.max() * eps)
    half, inv_half = (q * np.sqrt(ev)) @ q.T, (q / np.sqrt(ev)) @ q.T
    u, v = low_rank_factors(np.asarray(a, np.float64) @ half, rank)
    return u, (v.astype(np.float64) @ inv_half).astype(np.float32)


def encode(arrays: Mapping[str, np.ndarray], storage: str = "float32",
           keep_float32: tuple[str, ...] = (), ranks: Mapping[str, int] | None = None,
           factors: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """Arrays to write for ``storage``; names in ``keep_float32`` and 1-D arrays (biases,
    statistics: small, and offsets that coarse rounding would shift) stay float32. Matrices
    named in ``ranks`` are stored as two low-rank factors of that rank (plain truncated SVD),
    those in ``factors`` as the given factors (U, V)."""
    if storage not in STORAGES:
        raise ArgumentError(f"storage must be one of {STORAGES}, got {storage!r}")
    out: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        a = np.asarray(a, np.float32)
        if factors and name in factors:
            u, v = factors[name]
            out.update(encode({name + LOW_RANK_U: u, name + LOW_RANK_V: v}, storage))
        elif ranks and name in ranks:
            if a.ndim != 2:
                raise ArgumentError(f"{name}: low-rank storage needs a matrix, got shape {a.shape}")
            u, v = low_rank_factors(a, ranks[name])
            out.update(encode({name + LOW_RANK_U: u, name + LOW_RANK_V: v}, storage))
        elif storage == "float32" or name in keep_float32 or a.ndim < 2:
            out[name] = a
        elif storage == "float16":
            out[name] = a.astype(np.float16)
        else:
            out[name], out[name + SCALE_SUFFIX] = quantize_int8(a)
    return out


def decode(stored: Mapping[str, np.ndarray], factors: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
           ) -> dict[str, np.ndarray]:
    """Undo ``encode``: every weight array as float32; other arrays (strings, ints) unchanged.

    A low-rank matrix is returned as the product of its factors; pass a dict as ``factors``
    to also receive the factors (U, V) themselves under the matrix's name (inference can
    then multiply by V and U, which costs less than the product when the rank is low)."""
    out: dict[str, np.ndarray] = {}
    for name, a in stored.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        if a.dtype == np.int8 and name + SCALE_SUFFIX in stored:
            out[name] = dequantize_int8(a, stored[name + SCALE_SUFFIX])
        elif a.dtype == np.float16:
            out[name] = a.astype(np.float32)
        else:
            out[name] = a
    for name in [n for n in out if n.endswith(LOW_RANK_U)]:
        base = name[: -len(LOW_RANK_U)]
        u, v = out.pop(name), out.pop(base + LOW_RANK_V)
        out[base] = u @ v
        if factors is not None:
            factors[base] = (u, v)
    return out


def read_npz(path: str | Path, factors: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
             ) -> dict[str, np.ndarray]:
    """All arrays of an .npz file, decoded (see ``decode``; ``factors`` receives low-rank factors)."""
    with np.load(path, allow_pickle=False) as z:
        return decode({k: z[k] for k in z.files}, factors)

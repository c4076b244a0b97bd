"""bfloat16 scoring (``--precision``, the fast preset): used only where native, close to
float32, and float32 out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sppdet.device
from sppdet.device import PRECISIONS, scoring_dtype
from sppdet.errors import SppdetError
from sppdet.heads.model_dir import load_model, pooled_dim
from sppdet.heads.scoring import BF16_BLOCK_ROWS
from sppdet.models import DEFAULT_MODEL, SVM_MODEL, shipped_model_dir
from sppdet.presets import get_preset


def test_bfloat16_only_where_native(monkeypatch):
    cpu = torch.device("cpu")
    assert scoring_dtype("float32", cpu) == torch.float32
    monkeypatch.setattr(sppdet.device, "bf16_matmul_is_fast", lambda device: True)
    assert scoring_dtype("bfloat16", cpu) == torch.bfloat16
    monkeypatch.setattr(sppdet.device, "bf16_matmul_is_fast", lambda device: False)
    assert scoring_dtype("bfloat16", cpu) == torch.float32  # emulated bf16 would be slower
    with pytest.raises(SppdetError, match="unknown precision 'float16'"):
        scoring_dtype("float16", cpu)
    assert get_preset("fast").precision == "bfloat16" and get_preset("model").precision == "float32"
    assert set(PRECISIONS) == {"float32", "bfloat16"}


@pytest.mark.parametrize("name", [DEFAULT_MODEL, SVM_MODEL])
def test_bfloat16_scores_and_deltas_close_to_float32(name):
    model = load_model(shipped_model_dir(name))
    rng = np.random.default_rng(0)
    # Pooled features of real windows are non-negative (maxima of ReLU-like maps), mostly small.
    pooled = torch.from_numpy(rng.gamma(0.5, 0.6, (300, pooled_dim(model.config))).astype(np.float32))
    exact, lower = model.scorer("cpu"), model.scorer("cpu", torch.bfloat16)
    s32, h32 = exact.scores(pooled)
    s16, h16 = lower.scores(pooled)
    assert s16.dtype == torch.float32 and s16.shape == s32.shape
    if h16 is not None:
        assert h16.dtype == torch.bfloat16  # the fc layers ran in bfloat16
    spread = float(s32.max() - s32.min())
    assert float((s16 - s32).abs().max()) <= 0.03 * spread
    assert float((s16 - s32).abs().max()) > 0  # not silently float32
    rows = torch.arange(0, 300, 7)
    d32, d16 = exact.deltas(pooled, h32, rows), lower.deltas(pooled, h16, rows)
    assert d16.dtype == torch.float32
    assert float((d16 - d32).abs().max()) <= 0.03 * float(d32.abs().max())


@pytest.mark.parametrize("rows", [5, BF16_BLOCK_ROWS, 3 * BF16_BLOCK_ROWS + 17])
def test_bfloat16_blocks_of_rows_equal_one_product(rows):
    """On the CPU, bfloat16 products run on fixed blocks of rows (one compiled kernel per
    layer); the padded last block adds nothing, every row equals the one-product result."""
    model = load_model(shipped_model_dir(DEFAULT_MODEL))
    scorer = model.scorer("cpu", torch.bfloat16)
    g = torch.Generator().manual_seed(rows)
    x = torch.rand(rows, 300, generator=g).to(torch.bfloat16)
    w = (torch.randn(300, 40, generator=g) * 0.1).to(torch.bfloat16)
    b = torch.randn(40, generator=g).to(torch.bfloat16)
    for bias in (b, None):
        got = scorer._linear(x, w, bias)
        want = (x.float() @ w.float() + (0 if bias is None else bias.float()))
        assert got.shape == (rows, 40) and got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)

"""The allocator setting is safe to apply twice and reports whether it applied."""

from __future__ import annotations

import os
import sys

import pytest

import torch

from sppdet.perf import tune_allocator


def test_tune_allocator_idempotent_and_harmless():
    first = tune_allocator()
    assert first == tune_allocator()
    if sys.platform.startswith("linux"):
        assert first is True
    x = torch.ones(3000, 3000)  # large allocations still work and are correct
    assert float(x.sum()) == 9e6


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc / transparent huge pages: Linux only")
def test_tune_allocator_asks_torch_for_huge_pages_unless_the_user_chose(monkeypatch):
    import sppdet.perf

    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    monkeypatch.setattr(sppdet.perf, "_tuned", False)
    assert tune_allocator() is True
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    monkeypatch.setattr(sppdet.perf, "_tuned", False)
    tune_allocator()
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "0"

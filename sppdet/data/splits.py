"""Seeded development splits of an id list (train / validation)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from sppdet.fileio import atomic_path
from sppdet.errors import ArgumentError


def random_split(ids: Sequence[str], val_count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split ``ids`` into (train, val) with ``val_count`` ids drawn by a seeded permutation.

    Both halves keep the input order, so the result depends only on ids, count and seed.
    """
    if not 0 < val_count < len(ids):
        raise ArgumentError(f"val_count must be between 1 and {len(ids) - 1}, got {val_count}")
    order = np.random.default_rng(seed).permutation(len(ids))
    val_idx = set(order[:val_count].tolist())
    train = [i for k, i in enumerate(ids) if k not in val_idx]
    val = [i for k, i in enumerate(ids) if k in val_idx]
    return train, val


def write_id_list(path: str | Path, ids: Sequence[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids))

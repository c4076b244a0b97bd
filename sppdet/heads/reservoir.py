"""A seeded reservoir sample of feature rows: a uniform sample of bounded size from a stream.

Used wherever training collects examples over a pass of unknown length (positives, box
regression examples), so memory stays bounded whatever the data set size.
"""

from __future__ import annotations

import numpy as np


class Reservoir:
    """Keep a uniform random sample of at most ``capacity`` rows (Vitter's algorithm R).

    Rows are feature vectors (stored as ``dtype``) with optional aligned per-row arrays
    (``extras``, e.g. boxes). With ``capacity=None`` everything is kept.
    """

    def __init__(self, dim: int, capacity: int | None, rng: np.random.Generator,
                 dtype: np.dtype = np.float16, extras: dict[str, tuple[tuple[int, ...], np.dtype]] | None = None):
        self.dim = dim
        self.capacity = capacity
        self.rng = rng
        self.seen = 0
        self._chunks: list[np.ndarray] = []  # only while under capacity (or unbounded)
        self._extra_chunks: dict[str, list[np.ndarray]] = {k: [] for k in (extras or {})}
        self._extras_spec = extras or {}
        self._dtype = np.dtype(dtype)
        self._full: np.ndarray | None = None
        self._full_extras: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        if self._full is not None:
            return len(self._full)
        return sum(len(c) for c in self._chunks)

    def add(self, x: np.ndarray, **extras: np.ndarray) -> None:
        """Offer rows ``x`` (n, dim) and their extras to the sample."""
        n = len(x)
        if n == 0:
            return
        x = np.asarray(x).astype(self._dtype, copy=False)
        if self.capacity is None or (self._full is None and self.seen + n <= self.capacity):
            self._chunks.append(x)
            for k in self._extras_spec:
                self._extra_chunks[k].append(np.asarray(extras[k]))
            self.seen += n
            return
        if self._full is None:
            self._materialise()
        assert self._full is not None
        # Fill any free slots first, then algorithm R: row j (0-based stream position t)
        # replaces slot r ~ U{0..t} when r < capacity.
        free = self.capacity - len(self._full)
        if free > 0:
            take = min(free, n)
            self._full = np.concatenate([self._full, x[:take]])
            for k in self._extras_spec:
                self._full_extras[k] = np.concatenate([self._full_extras[k], np.asarray(extras[k])[:take]])
            self.seen += take
            x = x[take:]
            extras = {k: np.asarray(v)[take:] for k, v in extras.items()}
            n -= take
            if n == 0:
                return
        t = self.seen + np.arange(n)
        r = self.rng.integers(0, t + 1)
        hit = np.flatnonzero(r < self.capacity)
        if len(hit):
            slots = r[hit]
            # Later rows win when several land in one slot (sequential semantics).
            _, last = np.unique(slots[::-1], return_index=True)
            keep = hit[::-1][last]
            self._full[r[keep]] = x[keep]
            for k in self._extras_spec:
                self._full_extras[k][r[keep]] = np.asarray(extras[k])[keep]
        self.seen += n

    def _materialise(self) -> None:
        d = self.dim
        self._full = np.concatenate(self._chunks) if self._chunks else np.zeros((0, d), self._dtype)
        for k, (shape, dt) in self._extras_spec.items():
            ch = self._extra_chunks[k]
            self._full_extras[k] = np.concatenate(ch) if ch else np.zeros((0, *shape), dt)
        self._chunks, self._extra_chunks = [], {k: [] for k in self._extras_spec}

    def arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The current sample: (rows, extras)."""
        if self._full is not None:
            return self._full, dict(self._full_extras)
        rows = np.concatenate(self._chunks) if self._chunks else np.zeros((0, self.dim), self._dtype)
        extras = {}
        for k, (shape, dt) in self._extras_spec.items():
            ch = self._extra_chunks[k]
            extras[k] = np.concatenate(ch) if ch else np.zeros((0, *shape), dt)
        return rows, extras

    def restore(self, rows: np.ndarray, extras: dict[str, np.ndarray], seen: int) -> None:
        """Reset to a saved sample (``arrays()`` output and the ``seen`` count)."""
        self.seen = int(seen)
        rows = np.asarray(rows).astype(self._dtype, copy=False)
        if self.capacity is not None and self.seen > self.capacity:
            self._full, self._full_extras = rows, {k: np.asarray(extras[k]) for k in self._extras_spec}
            self._chunks, self._extra_chunks = [], {k: [] for k in self._extras_spec}
        else:
            self._full, self._full_extras = None, {}
            self._chunks = [rows] if len(rows) else []
            self._extra_chunks = {k: ([np.asarray(extras[k])] if len(rows) else []) for k in self._extras_spec}

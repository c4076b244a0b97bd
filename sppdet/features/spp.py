"""Spatial pyramid pooling with the paper's exact bins, vectorised over windows.

Bin i of n over a region of a cells starting at cell x0 spans
[x0 + floor(i a / n), x0 + ceil((i + 1) a / n)), as in adaptive max pooling; every bin
has at least one cell. (The "window ceil(a/n), stride floor(a/n)" recipe is wrong: for
a = 11, n = 4 it gives 5 bins.)

How it is computed without a loop over windows or bins:
- Any rectangle's max is the max of four lookups in a 2-D sparse table
  T[ky, kx][y, x] = max of the map over [y, y + 2^ky) x [x, x + 2^kx) (a range-max query:
  the four power-of-two blocks anchored at the rectangle's corners cover it exactly). A
  side whose length is a power of two is one block, so such bins need two lookups or one.
- A bin is a pair of cell intervals, one per axis. Windows share intervals and bins widely
  (always on coarse stride-32 maps): the distinct intervals are found first (by marking a
  small dense table, no sort), a bin is a pair of interval ids, and each distinct bin is
  looked up once, then copied to every window that has it, straight into the output. A bin
  that is one table entry (both sides powers of two) is copied from the table itself. The
  windows' spans along each axis are shared too (a few hundred for a thousand windows), so
  bin edges and intervals are computed per distinct span.
- Coarser levels can be unions of a finer level's bins: bin i of n is the union of bins
  i m .. i m + m - 1 of n m (floor(i m a / (n m)) = floor(i a / n), likewise for the
  ceiling, and consecutive bins touch or overlap). Coarse maps (a table up to the looked-up
  bins no bigger than the output) look every level up but the coarsest (level 1 of
  (1, 2, 3, 6) is the max of level 2's four bins: its large bins would double the table);
  fine maps look up only the finest level and those that do not divide it (levels 3, 2
  and 1 of (1, 2, 3, 6) are made of the 36 bins of level 6), so the table only needs
  blocks up to their largest bin. Derived levels are computed in the output, from the
  finer level's bins already there.
- The maps of several scales (different sizes) share one flat table, so windows of every
  scale are pooled in one query.
- Which bins to look up is planned on the host, in numpy (many small index operations, 2-3x
  cheaper there than as torch ops); the table, the lookups and the output stay on the maps'
  device. On the CPU they use torch's intra-op threads, as the conv layers do: the copies
  are bound by each core's memory traffic, so two threads make them 1.8x faster. (Threads
  that share a core with other busy work wait at every op, for pooling as for the conv:
  give torch only the free cores, as the commands do with their proposal workers.)
- Max pooling selects values, so pooling a float16 map in float16 is exact; the result is
  returned as float32 (float64 maps give float64, e.g. for gradient checks). Rounding is
  monotone, so pooling into bfloat16 gives the float32 result rounded.
- Identical windows are pooled once (``pool_distinct``: the detector scores each distinct
  window once).
- With autograd (conv fine-tuning through the pyramid), windows are pooled one by one with
  ``adaptive_max_pool2d`` (the same bins), and each bin's gradient flows to the cell that
  holds its max.

Output layout: level by level (in the order given), each level's n x n bins in row-major
order, each bin's C channels contiguous: column ``offset_n + (i * n + j) * C + c`` holds
channel c of bin (row i, column j) of level n.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sppdet.errors import ArgumentError

DEFAULT_LEVELS: tuple[int, ...] = (1, 2, 3, 6)
# Pool only the distinct windows when they are at most this share of all windows.
_DEDUP_SHARE = 0.75


def bin_edges(lo: torch.Tensor, hi: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Start (inclusive) and end (exclusive) cells (K, n) of n bins over cells [lo, hi]."""
    return level_edges(lo, hi, (n,))


def floor_log2(v: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """floor(log2(v)) of positive int64 values below 2^53 (a tensor or a numpy array),
    exactly: they are exact in float64, whose binary exponent is the answer (v = m 2^e with
    0.5 <= m < 1)."""
    if isinstance(v, np.ndarray):
        return np.frexp(v.astype(np.float64))[1].astype(np.int64) - 1
    return torch.frexp(v.to(torch.float64)).exponent.to(torch.int64) - 1


def sparse_table(fmap: torch.Tensor, ky_max: int, kx_max: int, out: torch.Tensor) -> torch.Tensor:
    """Fill ``out`` (ky_max + 1, kx_max + 1, H, W, C) with the range-max table of a (C, H, W)
    map (in ``out``'s dtype) and return it.

    Entry [ky, kx, y, x] is the max over [y, y + 2^ky) x [x, x + 2^kx). Only the entries
    whose block lies inside the map (y <= H - 2^ky, x <= W - 2^kx) are written, each from
    two such entries of the level below; the rest are never read (a query's blocks lie
    inside its bin). No autograd: training pools through ``adaptive_max_pool2d`` instead.
    """
    _, h, w = fmap.shape
    t = out
    # (Entering no_grad costs tens of microseconds; pooling runs under inference mode.)
    with torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext():
        # Views by select / narrow: cheaper than indexing with tuples.
        column = t.select(1, 0)  # kx = 0
        column.select(0, 0).copy_(fmap.permute(1, 2, 0))
        for ky in range(1, ky_max + 1):
            d, rows = 1 << (ky - 1), h - (1 << ky) + 1
            below = column.select(0, ky - 1)
            torch.maximum(below.narrow(0, 0, rows), below.narrow(0, d, rows), out=column.select(0, ky).narrow(0, 0, rows))
        for kx in range(1, kx_max + 1):  # every ky at once (rows past a block's reach are never read)
            d, cols = 1 << (kx - 1), w - (1 << kx) + 1
            left = t.select(1, kx - 1)
            torch.maximum(left.narrow(2, 0, cols), left.narrow(2, d, cols), out=t.select(1, kx).narrow(2, 0, cols))
    return t


def _max_rows(parts: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Elementwise max of ``parts`` (P, N, C) over its first axis, into ``out`` (N, C)."""
    if parts.shape[0] == 1:
        return out.copy_(parts[0])
    torch.maximum(parts[0], parts[1], out=out)
    for p in parts[2:]:
        torch.maximum(out, p, out=out)
    return out


def _gather_rows(rows: torch.Tensor, index: torch.Tensor | np.ndarray,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """rows[index] (into ``out`` when given, a contiguous (len(index), C) tensor). On one CPU
    thread without autograd through numpy's take (faster there than torch.index_select);
    on several, torch.index_select splits the rows between the threads (1.8x on two cores:
    the copy is bound by each core's memory traffic)."""
    if (rows.device.type == "cpu" and torch.get_num_threads() == 1
            and not (torch.is_grad_enabled() and rows.requires_grad)):
        # numpy has no bfloat16: move the same 16 bits.
        as_np = (lambda t: t.detach().view(torch.int16).numpy()) if rows.dtype == torch.bfloat16 else (
            lambda t: t.detach().numpy())
        idx = index if isinstance(index, np.ndarray) else index.numpy()
        if out is None:
            return torch.from_numpy(np.take(as_np(rows), idx, axis=0)).view(rows.dtype)
        # mode="clip" writes straight into ``out`` (the default mode goes through a buffer);
        # every index is in range, so nothing is clipped.
        np.take(as_np(rows), idx, axis=0, out=as_np(out), mode="clip")
        return out
    index = torch.as_tensor(index, device=rows.device)
    return torch.index_select(rows, 0, index, out=out) if out is not None else rows.index_select(0, index)


class SpatialPyramidPooling(nn.Module):
    """Max-pool windows of feature maps into n x n bins for each pyramid level.

    ``forward(features, rois)``:
    - ``features``: a (B, C, H, W) batch, a (C, H, W) map, or a list of (C, H_i, W_i) maps
      of different sizes (the scales of one image);
    - ``rois``: (K, 5) int (map index, x0, y0, x1, y1), or (K, 4) when there is one map;
      inclusive cell coordinates (``mapping.map_windows``); ``None`` pools each whole map
      (image classification with a fixed-length output).
    Returns (K, C * sum(n^2)) float32 (float64 for float64 maps) in the layout described in
    the module docstring.
    """

    def __init__(self, levels: Sequence[int] = DEFAULT_LEVELS):
        super().__init__()
        levels = tuple(int(n) for n in levels)
        if not levels or min(levels) < 1 or len(set(levels)) != len(levels):
            raise ArgumentError(f"pyramid levels must be distinct positive integers, got {levels}")
        self.levels = levels
        self.num_bins = sum(n * n for n in levels)
        self._offsets = dict(zip(levels, np.cumsum([0, *(n * n for n in levels[:-1])]).tolist()))
        finest, coarsest = max(levels), min(levels)
        # Coarse maps: every level looked up but the coarsest when it is a union of a finer
        # level's bins (its large bins would double the table); fine maps: only the finest
        # level and those that do not divide it (the others are unions of its bins).
        unions = coarsest if any(n != coarsest and n % coarsest == 0 for n in levels) else None
        self._coarse_plan = _make_plan(levels, [n for n in levels if n != unions])
        self._fine_plan = _make_plan(levels, [n for n in levels if finest % n or n == finest])

    def output_dim(self, channels: int) -> int:
        return channels * self.num_bins

    def extra_repr(self) -> str:
        return f"levels={self.levels}"

    def forward(self, features: torch.Tensor | Sequence[torch.Tensor],
                rois: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        pooled, inverse = self._pool_distinct(_as_map_list(features), rois, _DEDUP_SHARE)
        return pooled if pooled.shape[0] == inverse.shape[0] else pooled.index_select(0, inverse)

    def pool_distinct(self, features: torch.Tensor | Sequence[torch.Tensor],
                      rois: torch.Tensor | np.ndarray | None = None,
                      dtype: torch.dtype | None = None, *, rois_checked: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each distinct window pooled once: (D, dim) features and the (K,) index of each
        roi's row (``pooled[inverse]`` equals ``forward(features, rois)``). ``dtype``: of the
        features (default as ``forward``); bfloat16 gives exactly ``forward``'s values rounded
        to bfloat16 (rounding is monotone, so it commutes with max), at half the memory
        traffic. ``rois_checked``: the rois are a (K, 5) int64 array of cells inside their
        maps, as ``extractor.window_rois`` makes them, and are not checked again."""
        return self._pool_distinct(_as_map_list(features), rois, 1.0, dtype, rois_checked)

    def _pool_distinct(self, maps: list[torch.Tensor], rois: torch.Tensor | np.ndarray | None,
                       max_share: float, dtype: torch.dtype | None = None, rois_checked: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool the distinct rois when they are at most ``max_share`` of all, else every roi
        (then ``inverse`` is 0 .. K - 1), into ``dtype`` (None: float32, float64 for float64
        maps). Which bins to look up is planned on the host in numpy (many small index
        operations, several times cheaper there than as torch ops); the maps' values move
        only on their device."""
        rois = rois if rois_checked else _check_rois(rois, maps)
        k, device = rois.shape[0], maps[0].device
        if dtype is None:
            dtype = torch.float32 if maps[0].dtype in (torch.float16, torch.bfloat16) else maps[0].dtype
        if k == 0:
            return (torch.zeros((0, self.output_dim(maps[0].shape[0])), dtype=dtype, device=device),
                    torch.zeros(0, dtype=torch.int64, device=device))
        if torch.is_grad_enabled() and any(f.requires_grad for f in maps):
            return self._pool_differentiable(maps, rois).to(dtype), torch.arange(k, device=device)
        spans = _Spans.of(rois, maps)
        # Windows are identical when their two spans are (a span id includes its map); the
        # distinct windows have the same spans as all of them.
        ny, nx = spans.ny, spans.lo.size - spans.ny
        windows, inverse = _distinct(spans.of_window[:k] * nx + (spans.of_window[k:] - ny), ny * nx)
        if windows.size < k and windows.size <= max_share * k:
            y_span, x_span = np.divmod(windows, nx)
            distinct = spans._replace(of_window=np.concatenate([y_span, x_span + ny]))
            return self._pool(maps, distinct, dtype), torch.from_numpy(inverse).to(device)
        return self._pool(maps, spans, dtype), torch.arange(k, device=device)

    def _pool(self, maps: list[torch.Tensor], spans: "_Spans", dtype: torch.dtype) -> torch.Tensor:
        """(K, dim) features in ``dtype`` of the K windows of ``spans``: the plan's levels
        looked up in the maps' sparse tables, the other levels derived from them."""
        k, c = spans.of_window.size // 2, maps[0].shape[0]
        plan = self._coarse_plan
        start, end, table_rows = spans.edges(maps, plan.looked_up)
        if table_rows > k * self.num_bins:
            # Fine maps: a table up to every level's bins would outgrow the output.
            plan = self._fine_plan
            start, end, _ = spans.edges(maps, plan.looked_up)
        table_dtype = dtype if dtype.itemsize <= maps[0].dtype.itemsize else maps[0].dtype
        # Every index is planned on the host (numpy) first; the torch ops then run back to
        # back on the maps' device.
        lookups = _lookup_bins(maps, spans, start, end, plan.bin_rows, plan.bin_cols)
        values = _run_lookups(maps, lookups, table_dtype)
        # Each output bin from its row in the buffer (at derived levels' positions, a
        # placeholder, overwritten below).
        out = _gather_rows(values, lookups.row_of.reshape(-1)).view(k, self.num_bins, c)
        for n, src in plan.derived:  # a level whose bins are unions of a finer level's bins
            s = src // n
            # Bin (i, j) of level n is the max of bins (i s + a, j s + b) of level src, read
            # from the output itself (max commutes with the monotone dtype conversion below).
            # (torch.maximum of strided views: faster here than torch.amax over the parts.)
            src_bins = out[:, self._offsets[src]:self._offsets[src] + src * src].view(k, n, s, n, s, c)
            parts = [src_bins[:, :, a, :, b] for a in range(s) for b in range(s)]
            dest = out[:, self._offsets[n]:self._offsets[n] + n * n].view(k, n, n, c)
            torch.maximum(parts[0], parts[1], out=dest)
            for part in parts[2:]:
                torch.maximum(dest, part, out=dest)
        if table_dtype != dtype:
            # float16 maps into float32 features: gathered and maxed at half the bytes, then
            # converted in one streaming pass (cheaper than converting the used rows of the
            # table first and gathering float32 rows).
            out = out.to(dtype)
        return out.view(k, -1)

    def _pool_differentiable(self, maps: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """The same bins window by window with ``adaptive_max_pool2d`` (whose bin i of n over
        a cells is exactly [floor(i a / n), ceil((i + 1) a / n))): for the few hundred windows
        of a training step, its backward (each bin's gradient to its max cell) is several
        times cheaper than back-propagating through the sparse table."""
        rows = []
        for i, x0, y0, x1, y1 in rois.tolist():
            region = maps[i][:, y0:y1 + 1, x0:x1 + 1]
            rows.append(torch.cat([F.adaptive_max_pool2d(region, n).permute(1, 2, 0).reshape(-1)
                                   for n in self.levels]))
        out = torch.stack(rows)
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out


class _Plan(NamedTuple):
    """How a pyramid is pooled: the levels looked up in the table; for each of the output's
    bins its row and column edge (indices into the concatenated edges of ``looked_up``;
    at the positions of derived levels, those of the first looked-up bin, a placeholder);
    the output positions of the looked-up bins; and the derived levels in order, each with
    the finer level whose bins it is the union of."""

    looked_up: tuple[int, ...]
    bin_rows: np.ndarray
    bin_cols: np.ndarray
    positions: np.ndarray
    derived: tuple[tuple[int, int], ...]


def _make_plan(levels: Sequence[int], looked_up: Sequence[int]) -> _Plan:
    """The plan that looks up ``looked_up`` (in the order of ``levels``) and derives the
    other levels, each from the smallest available multiple of it."""
    looked_up = tuple(n for n in levels if n in set(looked_up))
    edge_start = dict(zip(looked_up, np.cumsum([0, *looked_up[:-1]]).tolist()))
    offsets = dict(zip(levels, np.cumsum([0, *(n * n for n in levels[:-1])]).tolist()))
    positions = [offsets[n] + b for n in looked_up for b in range(n * n)]
    rows = np.full(sum(n * n for n in levels), edge_start[looked_up[0]], dtype=np.int64)
    cols = rows.copy()
    rows[positions] = [edge_start[n] + i for n in looked_up for i in range(n) for _ in range(n)]
    cols[positions] = [edge_start[n] + j for n in looked_up for _ in range(n) for j in range(n)]
    derived, have = [], set(looked_up)
    for n in sorted(set(levels) - have, reverse=True):  # coarser levels from finer ones
        src = min(m for m in have if m % n == 0)
        derived.append((n, src))
        have.add(n)
    return _Plan(looked_up, rows, cols, np.array(positions, dtype=np.int64), tuple(derived))


def level_edges(lo: torch.Tensor | np.ndarray, hi: torch.Tensor | np.ndarray, levels: Sequence[int]
                ) -> tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray]:
    """Start (inclusive) and end (exclusive) cells (K, sum(levels)) of the bins over cells
    [lo, hi] of each level in turn (``bin_edges`` of every level, concatenated); int64
    tensors or numpy arrays. The bins' offsets from ``lo`` depend only on the region's
    size a: they are computed once per size up to the largest (a map side at most) and
    looked up, with no division per window."""
    a = hi - lo + 1
    first, end, _ = _bin_offsets(tuple(levels), _size_bound(int(a.max()) if a.shape[0] else 0))
    if isinstance(lo, torch.Tensor):
        first, end = torch.from_numpy(first).to(lo.device), torch.from_numpy(end).to(lo.device)
    return lo[:, None] + first[a], lo[:, None] + end[a]


@functools.lru_cache(maxsize=64)
def _bin_offsets(levels: tuple[int, ...], sizes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a region of a cells (a < ``sizes``): each bin's first and end cell offsets of
    every level in turn (``sizes``, E) and floor(log2) of its longest bin (``sizes``,), int64."""
    i = np.array([i for n in levels for i in range(n)], dtype=np.int64)
    n = np.array([n for n in levels for _ in range(n)], dtype=np.int64)
    a = np.arange(sizes, dtype=np.int64)[:, None]
    first, end = (i * a) // n, ((i + 1) * a + n - 1) // n
    return first, end, floor_log2(np.maximum((end - first).max(1), 1))


@functools.lru_cache(maxsize=16)
def _floor_log2_table(n: int) -> np.ndarray:
    """floor(log2(v)) for v in 0 .. n - 1 (0 for v = 0), int64: looked up per interval."""
    return floor_log2(np.maximum(np.arange(n, dtype=np.int64), 1))


def _size_bound(size: int) -> int:
    """A number of region sizes above ``size``, rounded up (few distinct ``_bin_offsets``)."""
    return max(64, 1 << size.bit_length())


class _Spans(NamedTuple):
    """The distinct cell spans [lo, hi] of the windows along both axes: span ``s`` lies on
    map ``map[s]`` along y (``s < ny``) or x, and window w spans ``of_window[w]`` along y
    and ``of_window[K + w]`` along x. Windows share spans widely (a few hundred for
    thousands of windows), so bin edges and intervals are computed per span."""

    lo: np.ndarray
    hi: np.ndarray
    map: np.ndarray
    ny: int
    of_window: np.ndarray
    n_maps: int
    size: int  # the longest map side: every span's cells are below it

    @classmethod
    def of(cls, rois: np.ndarray, maps: list[torch.Tensor]) -> "_Spans":
        """The spans of rois (K, 5) (map, x0, y0, x1, y1), found by one dense key per
        (axis, map, lo, hi)."""
        index, x0, y0, x1, y1 = rois.T
        m, size = len(maps), max(max(f.shape[1], f.shape[2]) for f in maps)
        axis_map = np.concatenate([index, index + m])  # y spans first, then x
        key = (axis_map * size + np.concatenate([y0, x0])) * size + np.concatenate([y1, x1])
        values, of_window = _distinct(key, 2 * m * size * size)
        rest, hi = np.divmod(values, size)
        axis_map, lo = np.divmod(rest, size)
        ny = int(np.searchsorted(axis_map, m))
        axis_map[ny:] -= m
        return cls(lo, hi, axis_map, ny, of_window, m, size)

    def edges(self, maps: list[torch.Tensor], levels: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int]:
        """``level_edges`` of every span (start, end: (S, sum(levels))), and the rows of the
        sparse tables of every map with blocks up to the largest of those bins on it."""
        a = self.hi - self.lo + 1
        first, end, longest = _bin_offsets(levels, _size_bound(int(a.max())))
        lo = self.lo[:, None]
        level = longest[a]
        ky_max = _max_per_map(level[:self.ny], self.map[:self.ny], self.n_maps)
        kx_max = _max_per_map(level[self.ny:], self.map[self.ny:], self.n_maps)
        hw = np.array([f.shape[1] * f.shape[2] for f in maps], dtype=np.int64)
        return lo + first[a], lo + end[a], int(((ky_max + 1) * (kx_max + 1) * hw).sum())


def _max_per_map(values: np.ndarray, index: np.ndarray, maps: int) -> np.ndarray:
    """The largest of ``values`` on each map (``index``: each value's map; 0 where none)."""
    if maps == 1:
        return np.array([values.max(initial=0)], dtype=np.int64)
    out = np.zeros(maps, dtype=np.int64)
    np.maximum.at(out, index, values)
    return out


def _distinct(key: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of non-negative int64 ``key`` (all < ``space``) and where each
    element of ``key`` is among them (``values[inverse] == key``)."""
    values = _distinct_values(key, space)
    return values, _lookup(values, np.arange(values.size), key, space)


def _distinct_values(key: np.ndarray, space: int) -> np.ndarray:
    """Sorted distinct values of non-negative int64 ``key`` (all < ``space``): by marking a
    dense table when ``space`` is small (no sort), else with ``np.unique``."""
    if _sparse(space, key.size):
        return np.unique(key)
    mark = np.zeros(space, dtype=bool)
    mark[key] = True
    return np.flatnonzero(mark)


def _lookup(values: np.ndarray, payload: np.ndarray, key: np.ndarray, space: int) -> np.ndarray:
    """``payload[i]`` for each element of ``key`` equal to ``values[i]`` (``values``: sorted
    distinct, all < ``space``; every key among them): through a dense table when ``space``
    is small, else by binary search."""
    if _sparse(space, key.size):
        return payload[np.searchsorted(values, key)]
    table = np.empty(space, dtype=payload.dtype)
    table[values] = payload
    return table[key]


def _sparse(space: int, size: int) -> bool:
    """Whether a key space is too large for a dense table against ``size`` keys."""
    return space > max(1 << 16, 8 * size)


class _BinLookups(NamedTuple):
    """Which table rows make the bins of a set of windows (planned on the host, in numpy,
    before any of the maps' values move; ``_lookup_bins`` plans it, ``_run_lookups`` does it).

    - ``shapes``: each map's sparse-table shape (ky levels, kx levels, H, W);
    - ``table_rows``: rows of all the tables, followed in the buffer by the combined bins;
    - ``corners``: the table rows of the combined bins' corners, kind by kind (2 along x,
      2 along y, 4), corner-major within a kind;
    - ``counts``: how many combined bins of each of those kinds;
    - ``row_of``: each window's bins' rows in the buffer (K, B)."""

    shapes: list[tuple[int, int, int, int]]
    table_rows: int
    corners: np.ndarray
    counts: tuple[int, int, int]
    row_of: np.ndarray


def _lookup_bins(maps: list[torch.Tensor], spans: _Spans, start: np.ndarray, end: np.ndarray,
                 bin_rows: np.ndarray, bin_cols: np.ndarray) -> _BinLookups:
    """Plan the max over each bin of the windows whose spans are ``spans``, each distinct
    bin looked up once. ``start``/``end`` (S, E): the bin edges along each span
    (``level_edges``); bin b of a window spans row edge ``bin_rows[b]`` of its y span and
    column edge ``bin_cols[b]`` of its x span. Only the maps' shapes are read.

    A bin is a pair of intervals, one per axis, and windows share intervals widely: the
    distinct intervals are found first (few), a bin is a pair of their ids, and its four
    table corners are sums of a row part and a column part. The buffer ``_run_lookups``
    fills is the sparse table followed by the maxima of the bins that are not one table
    entry: a bin whose sides are powers of two is its table entry's row, with no copy.
    """
    m, size, ny = spans.n_maps, spans.size, spans.ny
    k = spans.of_window.size // 2
    # Distinct intervals of both axes by one key: (axis, map, start, length).
    length = end - start  # 1 .. size
    axis_map = spans.map.copy()  # axis and map: y spans first, then x
    axis_map[ny:] += m
    values, ids = _distinct((axis_map[:, None] * size + start) * (size + 1) + length, 2 * m * size * (size + 1))
    rest, i_len = np.divmod(values, size + 1)
    i_axis_map, i_start = np.divmod(rest, size)
    nyi = int(np.searchsorted(i_axis_map, m))  # y intervals first (sorted keys), then x
    nxi = values.size - nyi
    level = _floor_log2_table(size + 1)[i_len]
    # A bin's key: its y interval id and x interval id, from each window's two spans.
    if m == 1:  # the per-map keys below, for one map, in fewer numpy calls (the detector's case)
        bin_space = nyi * nxi
        key = (np.take(ids * nxi, bin_rows, axis=1)[spans.of_window[:k]]
               + np.take(ids - nyi, bin_cols, axis=1)[spans.of_window[k:]])
        bins = _distinct_values(key, bin_space)
        yi, xi = np.divmod(bins, nxi)
        xi += nyi
    else:  # a bin pairs intervals of one map: the key space is each map's pairs, not all
        bin_space, part, decode = _per_map_bin_keys(i_axis_map, nyi, m)
        key = (np.take(part[ids], bin_rows, axis=1)[spans.of_window[:k]]
               + np.take(part[ids], bin_cols, axis=1)[spans.of_window[k:]])
        bins = _distinct_values(key, bin_space)
        yi, xi = decode(bins)
    # A side whose length is a power of two is one block: its two corners coincide. Order
    # the bins by how many distinct corners they have (1, 2 along x, 2 along y, 4) and
    # read only those.
    split = ((i_len & (i_len - 1)) != 0).astype(np.int8)
    kind = (split * 2)[yi] + split[xi]
    order = np.argsort(kind, kind="stable")  # a radix sort for 8-bit keys
    ends = list(itertools.accumulate(np.bincount(kind, minlength=4).tolist(), initial=0))
    ky_max = _max_per_map(level[:nyi], i_axis_map[:nyi], m)
    kx_max = _max_per_map(level[nyi:], i_axis_map[nyi:] - m, m)
    shapes = [(int(a) + 1, int(b) + 1, f.shape[1], f.shape[2]) for a, b, f in zip(ky_max, kx_max, maps)]
    starts = _table_starts(shapes)
    table_rows = starts[-1]
    # Row of table entry [ky, kx, y, x] of a map: base + (ky * lx + kx) * h * w + y * w + x,
    # split into a part of the y interval (first, last block) and one of the x interval:
    # offset + level * level_step + start * step, per (axis, map).
    steps = np.array([(s0, lx * h * w, w) for s0, (_, lx, h, w) in zip(starts, shapes)]
                     + [(0, h * w, 1) for _, _, h, w in shapes], dtype=np.int64)
    offset, level_step, step = steps[i_axis_map].T
    near = offset + level * level_step + i_start * step
    far = near + (i_len - (1 << level)) * step
    yi, xi = yi[order], xi[order]
    t, b, l, r = near[yi], far[yi], near[xi], far[xi]
    tl = t + l
    combined = bins.size - ends[1]  # bins made of 2 or 4 table entries, stored after the table
    row_of_bin = np.empty(bins.size, dtype=np.int64)
    row_of_bin[order[:ends[1]]] = tl[:ends[1]]
    row_of_bin[order[ends[1]:]] = np.arange(table_rows, table_rows + combined)
    # The other corners of the combined bins (of the 4-corner ones, all three).
    c = slice(ends[1], None)
    tr, bl, br = t[c] + r[c], b[c] + l[c], b[c] + r[c]
    x2, y2, xy4 = (slice(ends[i], ends[i + 1]) for i in (1, 2, 3))  # 2 along x, 2 along y, 4
    x2c, y2c, xy4c = (slice(ends[i] - ends[1], ends[i + 1] - ends[1]) for i in (1, 2, 3))
    corners = np.concatenate([tl[x2], tr[x2c], tl[y2], bl[y2c], tl[xy4], tr[xy4c], bl[xy4c], br[xy4c]])
    counts = (ends[2] - ends[1], ends[3] - ends[2], ends[4] - ends[3])
    return _BinLookups(shapes, table_rows, corners, counts, _lookup(bins, row_of_bin, key, bin_space))


def _per_map_bin_keys(i_axis_map: np.ndarray, nyi: int, m: int
                      ) -> tuple[int, np.ndarray, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]]:
    """Bin keys for several maps, where a bin pairs a y interval and an x interval of the
    same map. Intervals are sorted by (axis, map): map i's y intervals are ids ys_i ..
    ys_i + ny_i - 1, its x intervals nyi + xs_i .. nyi + xs_i + nx_i - 1, and its bins take
    keys base_i .. base_i + ny_i nx_i - 1 (base: the sum of ny_j nx_j over the maps
    before it). Against all pairs of intervals (nyi nxi keys), that is about m times fewer
    keys, which keeps them dense (marked in a table, no sort).

    Returns the number of keys, each interval's part of a key (a y interval's and an x
    interval's parts add up to the key of their bin), and the decoder from keys back to
    (y interval id, x interval id)."""
    map_y, map_x = i_axis_map[:nyi], i_axis_map[nyi:] - m
    ny, nx = np.bincount(map_y, minlength=m), np.bincount(map_x, minlength=m)
    ys, xs = np.cumsum(ny) - ny, np.cumsum(nx) - nx  # each map's first interval
    base = np.cumsum(ny * nx) - ny * nx
    part = np.concatenate([base[map_y] + (np.arange(nyi) - ys[map_y]) * nx[map_y],
                           np.arange(map_x.size) - xs[map_x]])

    def decode(bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        on = np.searchsorted(base, bins, side="right") - 1  # each bin's map (keys are sorted)
        yl, xl = np.divmod(bins - base[on], nx[on])
        return ys[on] + yl, nyi + xs[on] + xl

    return int((ny * nx).sum()), part, decode


def _run_lookups(maps: list[torch.Tensor], lookups: _BinLookups, dtype: torch.dtype) -> torch.Tensor:
    """The (rows, C) buffer in ``dtype`` on the maps' device that ``lookups`` plans: every
    map's sparse table, then the combined bins' maxima (one gather of all their corners,
    then each kind's maximum into its rows)."""
    rows = _flat_table(maps, lookups.shapes, dtype, extra_rows=sum(lookups.counts))
    gathered = _gather_rows(rows, lookups.corners)
    c, first, row = rows.shape[1], 0, lookups.table_rows
    for n, corners in zip(lookups.counts, (2, 2, 4)):
        _max_rows(gathered[first:first + corners * n].view(corners, n, c), out=rows[row:row + n])
        first, row = first + corners * n, row + n
    return rows


def _table_starts(shapes: list[tuple[int, int, int, int]]) -> list[int]:
    """Each map's first row in the flat table buffer, then the number of table rows."""
    return list(itertools.accumulate((a * b * h * w for a, b, h, w in shapes), initial=0))


def _flat_table(maps: list[torch.Tensor], shapes: list[tuple[int, int, int, int]], dtype: torch.dtype,
                extra_rows: int = 0) -> torch.Tensor:
    """Every map's sparse table (``shapes``) in one (rows, C) buffer of ``dtype`` on the
    maps' device, one after the other, filled in place and followed by ``extra_rows`` rows
    left for the caller."""
    c = maps[0].shape[0]
    starts = _table_starts(shapes)
    rows = maps[0].new_empty((starts[-1] + extra_rows, c), dtype=dtype)
    for f, shape, s0, s1 in zip(maps, shapes, starts[:-1], starts[1:]):
        sparse_table(f, shape[0] - 1, shape[1] - 1, out=rows[s0:s1].view(*shape, c))
    return rows


def _as_map_list(features: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(features, torch.Tensor):
        if features.dim() == 3:
            return [features]
        if features.dim() == 4:
            return list(features.unbind(0))
        raise ArgumentError(f"features must be (C, H, W) or (B, C, H, W), got {tuple(features.shape)}")
    maps = list(features)
    if not maps or any(f.dim() != 3 or f.shape[0] != maps[0].shape[0] for f in maps):
        raise ArgumentError("features must be a non-empty list of (C, H, W) maps with equal C")
    return maps


def _check_rois(rois: torch.Tensor | np.ndarray | None, maps: list[torch.Tensor]) -> np.ndarray:
    """Validate rois against the maps; return them as (K, 5) int64 numpy (the host plans
    which bins to look up)."""
    sizes = np.array([tuple(f.shape[1:]) for f in maps], dtype=np.int64).reshape(-1, 2)  # (M, 2) h, w
    if rois is None:
        idx = np.arange(len(maps), dtype=np.int64)
        zeros = np.zeros_like(idx)
        return np.stack([idx, zeros, zeros, sizes[:, 1] - 1, sizes[:, 0] - 1], axis=1)
    if isinstance(rois, torch.Tensor):
        rois = rois.detach().cpu().numpy()
    rois = np.asarray(rois)
    if rois.ndim != 2 or rois.shape[1] not in (4, 5):
        raise ArgumentError(f"rois must be (K, 4) or (K, 5), got {tuple(rois.shape)}")
    if rois.dtype.kind not in "iu":  # signed or unsigned integers
        raise ArgumentError("rois must hold integer cell coordinates (see mapping.map_windows)")
    rois = rois.astype(np.int64, copy=False)
    if rois.shape[1] == 4:
        if len(maps) != 1:
            raise ArgumentError("rois without a map index need a single feature map")
        rois = np.concatenate([np.zeros((rois.shape[0], 1), dtype=np.int64), rois], axis=1)
    if rois.shape[0] and not _rois_inside(rois, sizes):
        i, x0, y0, x1, y1 = rois.T
        bad_index = (i < 0) | (i >= len(maps))
        hw = sizes[i.clip(0, len(maps) - 1)]
        bad = bad_index | (x0 < 0) | (y0 < 0) | (x0 > x1) | (y0 > y1) | (x1 >= hw[:, 1]) | (y1 >= hw[:, 0])
        if bad.any():
            first = rois[bad][0].tolist()
            raise ArgumentError(f"roi {first} (map, x0, y0, x1, y1) is empty or outside its map "
                                f"(map sizes {sizes.tolist()})")
    return rois


def _rois_inside(rois: np.ndarray, sizes: np.ndarray) -> bool:
    """Whether every roi (K, 5) is a non-empty cell box inside its map (sizes (M, 2) h, w),
    by a few reductions (the common case; ``_check_rois`` finds the culprit otherwise)."""
    low, high = rois.min(0), rois.max(0)  # per column: map, x0, y0, x1, y1
    if low[0] < 0 or high[0] >= sizes.shape[0] or low[1:].min() < 0:
        return False
    if (rois[:, 3:] - rois[:, 1:3]).min() < 0:
        return False
    if sizes.shape[0] == 1:
        return bool(high[3] < sizes[0, 1] and high[4] < sizes[0, 0])
    return bool((rois[:, 3:] < sizes[rois[:, 0]][:, ::-1]).all())

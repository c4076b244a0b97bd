"""Spatial pyramid pooling with the paper's exact bins, vectorised over windows.

Bin i of n over a region of a cells starting at cell x0 spans
[x0 + floor(i a / n), x0 + ceil((i + 1) a / n)), as in adaptive max pooling; every bin
has at least one cell. (The "window ceil(a/n), stride floor(a/n)" recipe is wrong: for
a = 11, n = 4 it gives 5 bins.)

How it is computed without a loop over windows or bins:
- Any rectangle's max is the max of four lookups in a 2-D sparse table
  T[ky, kx][y, x] = max of the map over [y, y + 2^ky) x [x, x + 2^kx) (a range-max query:
  the four power-of-two blocks anchored at the rectangle's corners cover it exactly).
- Many windows share bins (always on coarse stride-32 maps): each distinct bin is looked
  up once and copied to the windows that have it.
- Coarse maps (a table with blocks up to the largest window no bigger than the output):
  the bins of every level are looked up at once, straight into the output layout.
  Fine maps (large windows in cells): only the finest level and the levels that do not
  divide it are looked up, and the table only needs blocks up to their largest bin; coarser
  levels that divide the finest one are unions of its bins: bin i of n is the union of bins
  i m .. i m + m - 1 of n m (floor(i m a / (n m)) = floor(i a / n), likewise for the
  ceiling, and consecutive bins touch or overlap), so for (1, 2, 3, 6) levels 3, 2 and 1
  are max-reductions of the 36 bins of level 6.
- The maps of several scales (different sizes) share one flat table, so windows of every
  scale are pooled in one query.
- Max pooling selects values, so pooling a float16 map in float16 is exact; the result is
  returned as float32 (float64 maps give float64, e.g. for gradient checks).
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
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sppdet.errors import ArgumentError

DEFAULT_LEVELS: tuple[int, ...] = (1, 2, 3, 6)
# Pool only the distinct windows when they are at most this share of all windows.
_DEDUP_SHARE = 0.75


@contextlib.contextmanager
def single_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """Run the many small, memory-bound pooling ops on one CPU thread: with intra-op
    threads, every op waits at a barrier, which costs a scheduler slice whenever the other
    cores are busy (measured: 10x slower pooling on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def bin_edges(lo: torch.Tensor, hi: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Start (inclusive) and end (exclusive) cells (K, n) of n bins over cells [lo, hi]."""
    a = (hi - lo + 1).unsqueeze(1)
    i = torch.arange(n, device=lo.device, dtype=lo.dtype).unsqueeze(0)
    start = lo.unsqueeze(1) + torch.div(i * a, n, rounding_mode="floor")
    end = lo.unsqueeze(1) + torch.div((i + 1) * a + n - 1, n, rounding_mode="floor")
    return start, end


def floor_log2(v: torch.Tensor) -> torch.Tensor:
    """floor(log2(v)) of positive int64 values, exactly (no float rounding)."""
    out = torch.zeros_like(v)
    x = v.clone()
    for shift in (32, 16, 8, 4, 2, 1):
        big = x >= (1 << shift)
        out += big.to(v.dtype) * shift
        x = torch.where(big, x >> shift, x)
    return out


def sparse_table(fmap: torch.Tensor, ky_max: int, kx_max: int, out: torch.Tensor) -> torch.Tensor:
    """Fill ``out`` (ky_max + 1, kx_max + 1, H, W, C) with the range-max table of a (C, H, W)
    map (in ``out``'s dtype) and return it.

    Entry [ky, kx, y, x] is the max over [y, y + 2^ky) x [x, x + 2^kx); entries whose
    block would cross the map's edge hold a smaller block's max and are never queried.
    No autograd: training pools through ``adaptive_max_pool2d`` instead.
    """
    _, h, w = fmap.shape
    t = out
    with torch.no_grad():
        t[0, 0] = fmap.permute(1, 2, 0)
        for ky in range(1, ky_max + 1):
            d = 1 << (ky - 1)
            torch.maximum(t[ky - 1, 0, : h - d], t[ky - 1, 0, d:], out=t[ky, 0, : h - d])
            t[ky, 0, h - d:] = t[ky - 1, 0, h - d:]
        for ky in range(ky_max + 1):
            for kx in range(1, kx_max + 1):
                d = 1 << (kx - 1)
                torch.maximum(t[ky, kx - 1, :, : w - d], t[ky, kx - 1, :, d:], out=t[ky, kx, :, : w - d])
                t[ky, kx, :, w - d:] = t[ky, kx - 1, :, w - d:]
    return t


def _max_over(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Max over a short dimension as a chain of elementwise maxima (faster than amax on
    CPU for float16)."""
    parts = x.unbind(dim)
    out = parts[0]
    for p in parts[1:]:
        out = torch.maximum(out, p)
    return out


def _gather_rows(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """rows[index]; on the CPU without autograd through numpy, several times faster than
    torch.index_select for row gathers."""
    if rows.device.type == "cpu" and not (torch.is_grad_enabled() and rows.requires_grad):
        if rows.dtype == torch.bfloat16:  # numpy has no bfloat16: move the same 16 bits
            return torch.from_numpy(np.take(rows.detach().view(torch.int16).numpy(), index.numpy(),
                                            axis=0)).view(torch.bfloat16)
        return torch.from_numpy(np.take(rows.detach().numpy(), index.numpy(), axis=0))
    return rows.index_select(0, index)


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
        finest = max(levels)
        self._direct = tuple(sorted({n for n in levels if finest % n} | {finest}))

    def output_dim(self, channels: int) -> int:
        return channels * self.num_bins

    def extra_repr(self) -> str:
        return f"levels={self.levels}"

    def forward(self, features: torch.Tensor | Sequence[torch.Tensor],
                rois: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        maps = _as_map_list(features)
        with single_thread_on_cpu(maps[0].device):
            pooled, inverse = self._pool_distinct(maps, rois, _DEDUP_SHARE)
            return pooled if pooled.shape[0] == inverse.shape[0] else pooled.index_select(0, inverse)

    def pool_distinct(self, features: torch.Tensor | Sequence[torch.Tensor],
                      rois: torch.Tensor | np.ndarray | None = None,
                      dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each distinct window pooled once: (D, dim) features and the (K,) index of each
        roi's row (``pooled[inverse]`` equals ``forward(features, rois)``). ``dtype``: of the
        features (default as ``forward``); bfloat16 gives exactly ``forward``'s values rounded
        to bfloat16 (rounding is monotone, so it commutes with max), at half the memory
        traffic."""
        maps = _as_map_list(features)
        with single_thread_on_cpu(maps[0].device):
            return self._pool_distinct(maps, rois, 1.0, dtype)

    def _pool_distinct(self, maps: list[torch.Tensor], rois: torch.Tensor | np.ndarray | None,
                       max_share: float, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool the distinct rois when they are at most ``max_share`` of all, else every roi
        (then ``inverse`` is 0 .. K - 1), into ``dtype`` (None: float32, float64 for float64
        maps)."""
        rois = _check_rois(rois, maps)
        k = rois.shape[0]
        every = torch.arange(k, device=rois.device)
        if dtype is None:
            dtype = torch.float32 if maps[0].dtype in (torch.float16, torch.bfloat16) else maps[0].dtype
        if k == 0:
            return torch.zeros((0, self.output_dim(maps[0].shape[0])), dtype=dtype, device=maps[0].device), every
        if torch.is_grad_enabled() and any(f.requires_grad for f in maps):
            return self._pool_differentiable(maps, rois).to(dtype), every
        # Distinct windows by a 1-D key (a 1-D sort is much faster than unique(dim=0)).
        radix = rois.amax(0) + 1
        key = rois[:, 0]
        for j in range(1, 5):
            key = key * radix[j] + rois[:, j]
        _, first, inverse = _unique_first(key)
        if first.shape[0] < k and first.shape[0] <= max_share * k:
            return self._pool(maps, rois[first], dtype), inverse
        return self._pool(maps, rois, dtype), every

    def _pool(self, maps: list[torch.Tensor], rois: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        k, c = rois.shape[0], maps[0].shape[0]
        index, x0, y0, x1, y1 = rois.unbind(1)
        edges = {n: (bin_edges(y0, y1, n), bin_edges(x0, x1, n)) for n in self.levels}
        every_level = _table_shapes(maps, index, edges, self.levels)
        if sum(a * b * h * w for a, b, h, w in every_level) <= k * self.num_bins:
            # Coarse maps: every level's bins straight from the table, in the output layout.
            rows, geo = _flat_table(maps, every_level, dtype, rois.device)
            bins = [_level_bins(edges[n]) for n in self.levels]
            ys, ye, xs, xe = (torch.cat(parts, dim=1) for parts in zip(*bins))
            return self._query(rows, geo, index, ys, ye, xs, xe).view(k, -1)

        rows, geo = _flat_table(maps, _table_shapes(maps, index, edges, self._direct), maps[0].dtype, rois.device)
        pooled = {n: self._query(rows, geo, index, *_level_bins(edges[n])).view(k, n, n, c) for n in self._direct}
        for n in sorted(self.levels, reverse=True):  # derive coarse levels from finer ones
            if n not in pooled:
                src = min(m for m in pooled if m % n == 0)
                s = src // n
                p = _max_over(pooled[src].view(k, n, s, src, c), 2)
                pooled[n] = _max_over(p.view(k, n, n, s, c), 3)
        out = torch.empty((k, self.output_dim(c)), dtype=dtype, device=rows.device)
        offsets = np.cumsum([0] + [c * n * n for n in self.levels])
        for n, start in zip(self.levels, offsets[:-1]):
            out[:, start:start + c * n * n] = pooled[n].reshape(k, -1)
        return out

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

    @staticmethod
    def _query(rows: torch.Tensor, geo: torch.Tensor, index: torch.Tensor, ys: torch.Tensor, ye: torch.Tensor,
               xs: torch.Tensor, xe: torch.Tensor) -> torch.Tensor:
        """Max over the bins [ys, ye) x [xs, xe), each (K, B), of windows on maps ``index``
        (K,) whose tables ``_flat_table`` laid out in ``rows`` (``geo``: (M, 4)): -> (K, B, C)
        in the table's dtype."""
        k, b = ys.shape
        hmax, wmax = int(geo[:, 2].max()) + 1, int(geo[:, 3].max()) + 1
        flat = [index.unsqueeze(1).expand(k, b).reshape(-1)] + [v.reshape(-1) for v in (ys, ye, xs, xe)]
        key = (((flat[0] * hmax + flat[1]) * hmax + flat[2]) * wmax + flat[3]) * wmax + flat[4]
        # Windows share bins (on a coarse map most do): look each distinct bin up once.
        _, first, inverse = _unique_first(key)
        distinct = first.shape[0] <= _DEDUP_SHARE * key.shape[0]
        if distinct:
            flat = [v.index_select(0, first) for v in flat]
        m, ys, ye, xs, xe = flat
        base, lx, h, w = geo.index_select(0, m).unbind(1)
        log2 = floor_log2(torch.arange(max(hmax, wmax), device=ys.device).clamp_min(1))
        ky, kx = log2[ye - ys], log2[xe - xs]
        block = base + (ky * lx + kx) * (h * w)
        top, bottom = block + ys * w, block + (ye - (1 << ky)) * w
        right = xe - (1 << kx)
        corners = torch.stack([top + xs, top + right, bottom + xs, bottom + right]).reshape(-1)
        maxima = _max_over(_gather_rows(rows, corners).view(4, m.shape[0], -1), 0)
        return (_gather_rows(maxima, inverse) if distinct else maxima).view(k, b, -1)


def _level_bins(edges: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One level's bins (ys, ye, xs, xe), each (K, n * n) in row-major bin order, from its
    row and column edges (each (K, n))."""
    (ys, ye), (xs, xe) = edges
    k, n = ys.shape

    def rows(v: torch.Tensor) -> torch.Tensor:
        return v.unsqueeze(2).expand(k, n, n).reshape(k, n * n)

    def cols(v: torch.Tensor) -> torch.Tensor:
        return v.unsqueeze(1).expand(k, n, n).reshape(k, n * n)

    return rows(ys), rows(ye), cols(xs), cols(xe)


def _table_shapes(maps: list[torch.Tensor], index: torch.Tensor,
                  edges: dict[int, tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]],
                  levels: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """(block sizes in y, in x, H, W) of each map's sparse table: blocks up to the largest
    bin of ``levels`` among the windows on that map."""
    # floor_log2 is monotone: the block size of each window's largest bin.
    need_y = floor_log2(torch.stack([(edges[n][0][1] - edges[n][0][0]).amax(1) for n in levels]).amax(0))
    need_x = floor_log2(torch.stack([(edges[n][1][1] - edges[n][1][0]).amax(1) for n in levels]).amax(0))
    m = len(maps)
    ky_max = torch.zeros(m, dtype=torch.int64, device=index.device).scatter_reduce(0, index, need_y, "amax")
    kx_max = torch.zeros(m, dtype=torch.int64, device=index.device).scatter_reduce(0, index, need_x, "amax")
    return [(int(ky_max[i]) + 1, int(kx_max[i]) + 1, f.shape[1], f.shape[2]) for i, f in enumerate(maps)]


def _flat_table(maps: list[torch.Tensor], shapes: list[tuple[int, int, int, int]], dtype: torch.dtype,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every map's sparse table in one (rows, C) buffer of ``dtype``, filled in place, and
    each map's (first row, block sizes in x, H, W) in it, (M, 4) on ``device``."""
    c = maps[0].shape[0]
    starts = np.cumsum([0] + [a * b * h * w for a, b, h, w in shapes])
    rows = maps[0].new_empty((int(starts[-1]), c), dtype=dtype)
    for f, shape, s0, s1 in zip(maps, shapes, starts[:-1], starts[1:]):
        sparse_table(f, shape[0] - 1, shape[1] - 1, out=rows[s0:s1].view(*shape, c))
    geometry = [(int(s0), b, h, w) for s0, (_, b, h, w) in zip(starts[:-1], shapes)]
    return rows, torch.tensor(geometry, dtype=torch.int64, device=device)


def _unique_first(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct values of a 1-D tensor, the index of one occurrence of each, and the
    inverse mapping (values[inverse] == key)."""
    values, inverse = torch.unique(key, return_inverse=True)
    first = torch.empty_like(values).scatter_(0, inverse, torch.arange(key.shape[0], device=key.device))
    return values, first, inverse


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


def _check_rois(rois: torch.Tensor | np.ndarray | None, maps: list[torch.Tensor]) -> torch.Tensor:
    """Validate rois against the maps; return (K, 5) int64 on the maps' device."""
    device = maps[0].device
    sizes = torch.tensor([f.shape[1:] for f in maps], dtype=torch.int64, device=device)  # (M, 2) h, w
    if rois is None:
        idx = torch.arange(len(maps), device=device)
        zeros = torch.zeros_like(idx)
        return torch.stack([idx, zeros, zeros, sizes[:, 1] - 1, sizes[:, 0] - 1], dim=1)
    rois = torch.as_tensor(rois, device=device)
    if rois.dim() != 2 or rois.shape[1] not in (4, 5):
        raise ArgumentError(f"rois must be (K, 4) or (K, 5), got {tuple(rois.shape)}")
    if rois.is_floating_point():
        raise ArgumentError("rois must hold integer cell coordinates (see mapping.map_windows)")
    rois = rois.to(torch.int64)
    if rois.shape[1] == 4:
        if len(maps) != 1:
            raise ArgumentError("rois without a map index need a single feature map")
        rois = torch.cat([rois.new_zeros((rois.shape[0], 1)), rois], dim=1)
    if rois.shape[0]:
        i, x0, y0, x1, y1 = rois.unbind(1)
        bad_index = (i < 0) | (i >= len(maps))
        hw = sizes[i.clamp(0, len(maps) - 1)]
        bad = bad_index | (x0 < 0) | (y0 < 0) | (x0 > x1) | (y0 > y1) | (x1 >= hw[:, 1]) | (y1 >= hw[:, 0])
        if bool(bad.any()):
            first = rois[bad][0].tolist()
            raise ArgumentError(f"roi {first} (map, x0, y0, x1, y1) is empty or outside its map "
                             f"(map sizes {sizes.tolist()})")
    return rois

"""Spatial pyramid pooling against a brute-force loop over windows and bins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sppdet.features import spp as spp_module
from sppdet.features.spp import SpatialPyramidPooling, bin_edges, floor_log2, level_edges


def brute_force(maps, rois, levels):
    """Loop over windows, levels and bins; bin i of n over a cells: [floor(i a/n), ceil((i+1) a/n))."""
    rows = []
    for m, x0, y0, x1, y1 in rois:
        fmap = maps[m].double()
        parts = []
        for n in levels:
            w, h = x1 - x0 + 1, y1 - y0 + 1
            level = torch.empty(n, n, fmap.shape[0], dtype=torch.float64)
            for i in range(n):
                ys, ye = y0 + (i * h) // n, y0 + -(-((i + 1) * h) // n)
                for j in range(n):
                    xs, xe = x0 + (j * w) // n, x0 + -(-((j + 1) * w) // n)
                    level[i, j] = fmap[:, ys:ye, xs:xe].amax(dim=(1, 2))
            parts.append(level.reshape(-1))
        rows.append(torch.cat(parts))
    return torch.stack(rows).float()


def random_rois(rng, sizes, k):
    """Random windows on maps of the given (h, w), with one-cell windows, edge windows
    and whole-map windows mixed in."""
    rois = []
    for t in range(k):
        m = int(rng.integers(len(sizes)))
        h, w = sizes[m]
        kind = t % 4
        if kind == 0:  # one cell
            x0 = x1 = int(rng.integers(w))
            y0 = y1 = int(rng.integers(h))
        elif kind == 1:  # touching the right / bottom edge
            x0, y0 = int(rng.integers(w)), int(rng.integers(h))
            x1, y1 = w - 1, h - 1
        elif kind == 2:  # touching the left / top edge
            x0, y0 = 0, 0
            x1, y1 = int(rng.integers(w)), int(rng.integers(h))
        else:
            x0, y0 = int(rng.integers(w)), int(rng.integers(h))
            x1, y1 = int(rng.integers(x0, w)), int(rng.integers(y0, h))
        rois.append((m, x0, y0, x1, y1))
    rois.append((0, 0, 0, sizes[0][1] - 1, sizes[0][0] - 1))  # the whole map
    return rois


@pytest.mark.parametrize("levels", [(1, 2, 3, 6), (6, 3, 2, 1), (1, 2, 4), (2, 3, 5), (1, 3), (4,)])
def test_matches_brute_force_on_random_maps(levels):
    rng = np.random.default_rng(sum(levels))
    sizes = [(13, 17), (30, 9), (1, 1), (2, 40)]
    maps = [torch.randn(5, h, w, generator=torch.Generator().manual_seed(i)) for i, (h, w) in enumerate(sizes)]
    rois = random_rois(rng, sizes, 300)
    spp = SpatialPyramidPooling(levels)
    got = spp(maps, torch.tensor(rois))
    assert got.shape == (len(rois), 5 * sum(n * n for n in levels))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, brute_force(maps, rois, levels), rtol=0, atol=0)


@pytest.mark.parametrize("size, k", [((120, 160), 12), ((6, 8), 400)])
def test_shared_and_distinct_bins_match_brute_force(size, k):
    """Few windows on a large map (every bin distinct) and many on a coarse one (most bins
    shared by several windows, looked up once): the same values as the loop."""
    rng = np.random.default_rng(k)
    fmap = torch.randn(3, *size, generator=torch.Generator().manual_seed(k))
    rois = random_rois(rng, [size], k)
    got = SpatialPyramidPooling((1, 2, 3, 6))(fmap, torch.tensor(rois))
    torch.testing.assert_close(got, brute_force([fmap], rois, (1, 2, 3, 6)), rtol=0, atol=0)


@pytest.mark.parametrize("k", [40, 3000])
def test_several_maps_with_one_left_empty_match_brute_force(k):
    """Bins pair intervals of one map, keyed per map: a map with no window between two that
    have some (an empty key range), and enough windows for keys of every kind of bin."""
    rng = np.random.default_rng(k)
    sizes = [(13, 17), (6, 7), (45, 60), (30, 9)]
    maps = [torch.randn(4, h, w, generator=torch.Generator().manual_seed(i)) for i, (h, w) in enumerate(sizes)]
    rois = [r for r in random_rois(rng, sizes, k) if r[0] != 1]
    got = SpatialPyramidPooling()(maps, torch.tensor(rois))
    torch.testing.assert_close(got, brute_force(maps, rois, (1, 2, 3, 6)), rtol=0, atol=0)


def test_single_map_and_batch_inputs():
    rng = np.random.default_rng(3)
    fmap = torch.randn(4, 11, 14)
    rois = random_rois(rng, [(11, 14)], 60)
    spp = SpatialPyramidPooling()
    want = brute_force([fmap], rois, (1, 2, 3, 6))
    cells = torch.tensor([r[1:] for r in rois])
    torch.testing.assert_close(spp(fmap, cells), want, rtol=0, atol=0)  # (K, 4), one map
    batch = torch.stack([torch.randn(4, 11, 14), fmap])
    rois_b = torch.cat([torch.ones(len(rois), 1, dtype=torch.int64), cells], dim=1)
    torch.testing.assert_close(spp(batch, rois_b), want, rtol=0, atol=0)


def test_whole_map_equals_adaptive_max_pool():
    x = torch.randn(3, 6, 19, 23)
    out = SpatialPyramidPooling()(x)  # rois=None: each whole map
    want = torch.cat([F.adaptive_max_pool2d(x, n).permute(0, 2, 3, 1).reshape(3, -1)
                      for n in (1, 2, 3, 6)], dim=1)
    torch.testing.assert_close(out, want, rtol=0, atol=0)


def test_feature_dimension_is_channels_times_50():
    spp = SpatialPyramidPooling()
    assert spp.num_bins == 50
    assert spp.output_dim(96) == 4800 and spp.output_dim(256) == 12800
    out = spp(torch.randn(96, 8, 8), torch.tensor([[0, 0, 7, 7], [2, 3, 2, 3]]))
    assert out.shape == (2, 96 * 50)


def test_bin_edges_never_make_extra_bins():
    # a = 11, n = 4: [0,3) [2,6) [5,9) [8,11) -- four bins, not the five of ceil/floor pooling
    start, end = bin_edges(torch.tensor([0]), torch.tensor([10]), 4)
    assert start.tolist() == [[0, 2, 5, 8]] and end.tolist() == [[3, 6, 9, 11]]
    lo = torch.zeros(200, dtype=torch.int64)
    hi = torch.arange(200)
    for n in (1, 2, 3, 6):
        s, e = bin_edges(lo, hi, n)
        assert (e > s).all()  # no empty bin, even for one-cell windows
        assert (s[:, 0] == 0).all() and (e[:, -1] == hi + 1).all()  # bins cover the window


def test_floor_log2_exact():
    v = torch.arange(1, 5000)
    assert floor_log2(v).tolist() == [x.bit_length() - 1 for x in range(1, 5000)]
    # Around every power of two up to 2^52 (where float rounding would show first).
    big = [x for e in range(1, 53) for x in ((1 << e) - 1, 1 << e, (1 << e) + 1)]
    assert floor_log2(torch.tensor(big)).tolist() == [x.bit_length() - 1 for x in big]


def test_float16_maps_pool_exactly_and_duplicates():
    rng = np.random.default_rng(4)
    fmap = torch.randn(8, 12, 15).half()
    rois = random_rois(rng, [(12, 15)], 40)
    rois = rois + rois[:30] * 3  # many duplicates: the distinct windows are pooled once
    cells = torch.tensor([r[1:] for r in rois])
    out = SpatialPyramidPooling()(fmap, cells)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, brute_force([fmap.float()], rois, (1, 2, 3, 6)), rtol=0, atol=0)


def test_gradient_reaches_the_max_of_every_bin():
    x = torch.randn(2, 4, 9, 10, requires_grad=True)
    spp = SpatialPyramidPooling((1, 2))
    out = spp(x)
    out.sum().backward()
    # Each of the 2 x 4 x 5 outputs sends gradient 1 to its argmax (random values: no ties).
    assert x.grad.sum().item() == pytest.approx(out.numel())
    assert (x.grad.flatten(1).amax(1) >= 1).all()


@pytest.mark.parametrize("bad", [
    [[0, 0, 0, 10, 3]],  # x1 outside the 8-wide map
    [[0, 3, 0, 2, 3]],  # x0 > x1
    [[1, 0, 0, 1, 1]],  # map index 1 of 1
    [[0, -1, 0, 1, 1]],
])
def test_invalid_rois_are_refused(bad):
    with pytest.raises(ValueError):
        SpatialPyramidPooling()(torch.randn(3, 6, 8), torch.tensor(bad))


def test_float_rois_and_bad_levels_refused():
    with pytest.raises(ValueError, match="integer"):
        SpatialPyramidPooling()(torch.randn(3, 6, 8), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError):
        SpatialPyramidPooling((1, 1, 2))
    with pytest.raises(ValueError):
        SpatialPyramidPooling((0, 2))


def test_empty_rois():
    out = SpatialPyramidPooling()(torch.randn(3, 6, 8), torch.zeros((0, 4), dtype=torch.int64))
    assert out.shape == (0, 150)


@pytest.mark.parametrize("size, k, looked_up", [((6, 8), 400, [2 + 3 + 6]), ((120, 160), 12, [6])])
def test_coarse_maps_look_levels_up_and_fine_maps_derive_them(size, k, looked_up, monkeypatch):
    """Coarse maps (table no bigger than the output): the 49 bins of levels 2, 3 and 6 in
    one lookup (level 1 is the union of level 2's bins); fine maps: only level 6 (levels 3,
    2, 1 derived). Both equal the loop."""
    seen = []
    lookup = spp_module._lookup_bins

    def spy(maps, spans, start, end, bin_rows, bin_cols):
        seen.append(start.shape[1])  # the bin edges of the looked-up levels
        return lookup(maps, spans, start, end, bin_rows, bin_cols)

    monkeypatch.setattr(spp_module, "_lookup_bins", spy)
    rng = np.random.default_rng(k + 1)
    fmap = torch.randn(4, *size, generator=torch.Generator().manual_seed(k)).half()
    rois = random_rois(rng, [size], k)
    got = SpatialPyramidPooling()(fmap, torch.tensor(rois))
    assert seen == looked_up
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, brute_force([fmap.float()], rois, (1, 2, 3, 6)), rtol=0, atol=0)


@pytest.mark.parametrize("levels, coarse, fine, derived", [
    ((1, 2, 3, 6), (2, 3, 6), (6,), ((3, 6), (2, 6), (1, 2))),
    ((6, 3, 2, 1), (6, 3, 2), (6,), ((3, 6), (2, 6), (1, 2))),
    ((2, 3, 5), (2, 3, 5), (2, 3, 5), ()),
    ((1, 2, 4), (2, 4), (4,), ((2, 4), (1, 2))),
    ((4,), (4,), (4,), ()),
])
def test_plans_look_up_and_derive_the_expected_levels(levels, coarse, fine, derived):
    spp = SpatialPyramidPooling(levels)
    assert spp._coarse_plan.looked_up == coarse
    assert spp._fine_plan.looked_up == fine
    assert spp._fine_plan.derived == derived
    # Each looked-up bin sits at its own output position, with its own row and column edges.
    plan = spp._coarse_plan
    starts = dict(zip(coarse, np.cumsum([0, *coarse[:-1]])))
    offsets = dict(zip(levels, np.cumsum([0, *(n * n for n in levels[:-1])])))
    expected = [(offsets[n] + i * n + j, starts[n] + i, starts[n] + j)
                for n in coarse for i in range(n) for j in range(n)]
    got = [(p, plan.bin_rows[p], plan.bin_cols[p]) for p in plan.positions.tolist()]
    assert got == expected
    assert plan.bin_rows.shape == plan.bin_cols.shape == (sum(n * n for n in levels),)


@pytest.mark.parametrize("space", [50, 10**9])
def test_distinct_matches_sorted_unique(space):
    """Dense marking (small key space) and sorting (large) both give np.unique's values
    and an inverse that maps back to every key."""
    key = np.random.default_rng(space).integers(0, min(space, 40), (7, 9)) * (space // 40 if space > 40 else 1)
    values, inverse = spp_module._distinct(key, space)
    assert np.array_equal(values, np.unique(key))
    assert inverse.shape == key.shape
    assert np.array_equal(values[inverse], key)


@pytest.mark.parametrize("as_array", [lambda v: np.array(v, dtype=np.int64),
                                      lambda v: torch.tensor(v, dtype=torch.int64)])
def test_level_edges_match_the_bin_formula(as_array):
    """Every level's bins, concatenated, by the formula bin i of n over a cells from lo:
    [lo + floor(i a / n), lo + ceil((i + 1) a / n)), for numpy and torch, and no windows."""
    lo, hi = [0, 3, 5, 2, 7, 0], [0, 9, 30, 4, 7, 40]
    levels = (1, 2, 3, 6, 4)
    start, end = level_edges(as_array(lo), as_array(hi), levels)
    assert type(start) is type(as_array(lo)) and start.dtype == end.dtype and start.shape == (6, 16)
    want_start = [[a + (i * (b - a + 1)) // n for n in levels for i in range(n)] for a, b in zip(lo, hi)]
    want_end = [[a + -(-((i + 1) * (b - a + 1)) // n) for n in levels for i in range(n)] for a, b in zip(lo, hi)]
    assert start.tolist() == want_start and end.tolist() == want_end
    empty = level_edges(as_array(lo[:0]), as_array(hi[:0]), levels)
    assert tuple(empty[0].shape) == (0, 16) and tuple(empty[1].shape) == (0, 16)


def test_pool_distinct_pools_each_distinct_window_once():
    rng = np.random.default_rng(8)
    sizes = [(9, 12), (20, 25)]
    maps = [torch.randn(3, h, w) for h, w in sizes]
    rois = random_rois(rng, sizes, 50)
    rois = rois + rois[::2] + rois[:5]
    spp = SpatialPyramidPooling()
    pooled, inverse = spp.pool_distinct(maps, torch.tensor(rois))
    assert len(pooled) == len(set(rois)) and inverse.shape == (len(rois),)
    inv = inverse.tolist()
    assert all((inv[i] == inv[j]) == (rois[i] == rois[j]) for i in range(len(rois)) for j in range(i))
    torch.testing.assert_close(pooled[inverse], brute_force(maps, rois, (1, 2, 3, 6)), rtol=0, atol=0)
    torch.testing.assert_close(pooled[inverse], spp(maps, torch.tensor(rois)), rtol=0, atol=0)


@pytest.mark.parametrize("size, k, map_dtype", [((6, 8), 400, torch.float32), ((120, 160), 12, torch.float32),
                                                ((9, 11), 200, torch.float16)])
def test_bfloat16_pooling_is_the_float32_result_rounded(size, k, map_dtype):
    """Rounding to bfloat16 is monotone, so it commutes with max: pooling into bfloat16
    (coarse and fine paths) gives exactly the float32 features rounded."""
    rng = np.random.default_rng(k + 3)
    fmap = torch.randn(6, *size, generator=torch.Generator().manual_seed(k)).to(map_dtype)
    rois = torch.tensor(random_rois(rng, [size], k))
    spp = SpatialPyramidPooling()
    pooled, inverse = spp.pool_distinct(fmap, rois, torch.bfloat16)
    assert pooled.dtype == torch.bfloat16
    want = spp(fmap, rois).to(torch.bfloat16)
    assert torch.equal(pooled[inverse], want)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("size, k", [((6, 8), 300), ((60, 80), 20)])
def test_one_and_two_threads_match_brute_force(threads, size, k):
    """On one CPU thread the rows are copied by numpy, on several by torch's threads: the
    same values as the loop (coarse and fine maps, float32 and bfloat16 features)."""
    rng = np.random.default_rng(k + threads)
    fmap = torch.randn(7, *size, generator=torch.Generator().manual_seed(k))
    rois = random_rois(rng, [size], k)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        spp = SpatialPyramidPooling()
        got = spp(fmap, torch.tensor(rois))
        pooled, inverse = spp.pool_distinct(fmap, torch.tensor(rois), torch.bfloat16)
    finally:
        torch.set_num_threads(before)
    want = brute_force([fmap], rois, (1, 2, 3, 6))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(pooled[inverse], want.to(torch.bfloat16))


def test_rois_outside_their_own_map_are_refused():
    """Each roi is checked against its own map's size (here inside map 0, outside map 1)."""
    maps = [torch.randn(3, 6, 8), torch.randn(3, 3, 4)]
    spp = SpatialPyramidPooling()
    assert spp(maps, torch.tensor([[0, 0, 0, 7, 5], [1, 0, 0, 3, 2]])).shape == (2, 150)
    for bad in ([1, 0, 0, 5, 2], [1, 0, 0, 3, 4], [2, 0, 0, 1, 1], [0, 2, 1, 1, 1]):
        with pytest.raises(ValueError, match=r"outside its map"):
            spp(maps, torch.tensor([[0, 0, 0, 1, 1], bad]))

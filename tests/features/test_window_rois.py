"""window_rois: every roi inside its map (so pooling may skip its check), bad boxes refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sppdet.errors import ArgumentError
from sppdet.features.extractor import FeatureMaps, pool_distinct_windows, window_rois
from sppdet.features.mapping import map_windows, scale_box_array
from sppdet.features.pyramid import nearest_scale
from sppdet.features.spp import SpatialPyramidPooling, _rois_inside


def _maps(scales_hw, factors) -> FeatureMaps:
    maps = [torch.randn(3, h, w, generator=torch.Generator().manual_seed(h * w)) for h, w in scales_hw]
    return FeatureMaps(maps, np.asarray(factors, dtype=np.float64), (300, 400), tuple(range(len(maps))))


def _boxes(rng, n):
    """Boxes of every kind: inside, crossing and outside the image, tiny, huge, degenerate."""
    x0, y0 = rng.uniform(-100, 450, n), rng.uniform(-100, 350, n)
    w, h = rng.choice([0.0, 0.5, 3.0, 40.0, 900.0], n) * rng.uniform(0.5, 1.5, n), rng.uniform(0, 500, n)
    return np.stack([x0, y0, x0 + w, y0 + h], axis=1)


@pytest.mark.parametrize("scales_hw, factors", [
    ([(19, 25)], [(1.0, 1.0)]),
    ([(10, 13), (19, 25), (38, 50)], [(0.5, 0.5), (1.0, 1.0), (2.0, 2.0)]),
])
def test_every_roi_lies_inside_its_map_and_checked_pooling_is_the_same(scales_hw, factors):
    rng = np.random.default_rng(len(scales_hw))
    maps = _maps(scales_hw, factors)
    boxes = _boxes(rng, 500)
    rois = window_rois(maps, boxes, 16, 7.5)
    sizes = np.array(scales_hw, dtype=np.int64)
    assert rois.dtype == np.int64 and rois.shape == (500, 5)
    assert _rois_inside(rois, sizes)
    spp = SpatialPyramidPooling()
    pooled, inverse = pool_distinct_windows(maps, boxes, 16, 7.5, spp)  # rois_checked=True inside
    want, want_inverse = spp.pool_distinct(maps.maps, rois)  # checked
    assert torch.equal(pooled[inverse], want[want_inverse])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_boxes_are_refused_with_the_box(bad):
    maps = _maps([(19, 25)], [(1.0, 1.0)])
    boxes = np.array([[10.0, 10.0, 50.0, 60.0], [5.0, bad, 30.0, 40.0]])
    with pytest.raises(ArgumentError, match="finite"):
        window_rois(maps, boxes, 16, 0.0)


@pytest.mark.parametrize("scales_hw, factors", [
    ([(19, 25)], [(0.75, 1.25)]),
    ([(10, 13), (19, 25), (38, 50)], [(0.5, 0.4), (1.0, 0.8), (2.0, 1.6)]),
])
def test_rois_are_the_nearest_scale_and_its_mapped_cells(scales_hw, factors):
    """window_rois works on the boxes' sides as rows; it must equal the per-box path:
    ``nearest_scale``, then ``map_windows`` of the box scaled to that scale."""
    rng = np.random.default_rng(7)
    maps = _maps(scales_hw, factors)
    boxes = _boxes(rng, 400)
    boxes[::3] = np.round(boxes[::3] / 8) * 8  # exact multiples of the stride's fractions
    rois = window_rois(maps, boxes, 16, 7.5)
    which = nearest_scale(boxes, maps.factors)
    for i, box in enumerate(boxes):
        s = which[i]
        cell = map_windows(scale_box_array(box[None], maps.factors[s]), 16, 7.5, scales_hw[s])[0]
        assert rois[i].tolist() == [s, *cell.tolist()], i


@pytest.mark.filterwarnings("error")
def test_huge_finite_boxes_are_clamped_or_refused_never_outside_the_map():
    """Values near the float64 limit sum to infinity (the quick test) without being
    infinite; scaled up, they overflow, which is refused like an infinite box."""
    maps = _maps([(19, 25)], [(1.0, 1.0)])
    boxes = np.array([[1e308, 1e308, 1.5e308, 1.5e308], [-1e308, 5.0, 1e308, 40.0], [1e308, 0.0, -1e308, 9.0]])
    rois = window_rois(maps, boxes, 16, 0.0)
    assert _rois_inside(rois, np.array([(19, 25)]))
    # Inverted (x1 > x2): collapsed to the cell nearest its centre, 0.
    assert rois[:, 1].tolist() == [24, 0, 0] and rois[:, 3].tolist() == [24, 24, 0]
    with pytest.raises(ArgumentError, match="finite"):
        window_rois(_maps([(19, 25)], [(2.0, 2.0)]), boxes, 16, 0.0)  # 2e308 overflows

"""Conv maps once per image and scale, and pooled window features from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from sppdet.device import resolve_device
from sppdet.features.backbones import Backbone
from sppdet.features.mapping import cell_rows
from sppdet.features.pyramid import (DEFAULT_MAX_SIZE, DEFAULT_SCALES, nearest_scale,
                                     scale_factors, to_input_tensor)
from sppdet.features.spp import DEFAULT_LEVELS, SpatialPyramidPooling
from sppdet.errors import ArgumentError
from sppdet.features.config import FeatureConfig

# Maps are kept at the cache's precision, so features pooled straight from a forward pass
# equal those pooled from the cache (max pooling of float16 values is exact).
MAP_DTYPE = torch.float16


@dataclass
class FeatureMaps:
    """The conv maps of one image at every scale, and how the image was resized."""

    maps: list[torch.Tensor]  # per scale (C, H_s, W_s), float16
    factors: np.ndarray  # (S, 2) actual resize factors (fx, fy) per scale
    image_hw: tuple[int, int]  # original (height, width)
    scales: tuple[int, ...]

    def to(self, device: torch.device | str) -> "FeatureMaps":
        return FeatureMaps([m.to(device) for m in self.maps], self.factors, self.image_hw, self.scales)

    @property
    def nbytes(self) -> int:
        return sum(m.numel() * m.element_size() for m in self.maps)


def pool_windows(maps: FeatureMaps, boxes: np.ndarray | torch.Tensor, stride: int, offset: float,
                 spp: SpatialPyramidPooling) -> torch.Tensor:
    """Pool internal boxes (N, 4), in original image pixels, into (N, D) float32 features.

    Each box is pooled at the scale whose scaled area is nearest 224 x 224, from the cells
    the paper's appendix mapping gives (``mapping.map_windows``).
    """
    return spp(maps.maps, window_rois(maps, boxes, stride, offset))


def pool_distinct_windows(maps: FeatureMaps, boxes: np.ndarray | torch.Tensor, stride: int, offset: float,
                          spp: SpatialPyramidPooling, dtype: torch.dtype | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``pool_windows`` with boxes that fall on the same cells of the same scale pooled once:
    (D, dim) features in ``dtype`` (default float32) and each box's row (N,)
    (``SpatialPyramidPooling.pool_distinct``)."""
    return spp.pool_distinct(maps.maps, window_rois(maps, boxes, stride, offset), dtype, rois_checked=True)


def window_rois(maps: FeatureMaps, boxes: np.ndarray | torch.Tensor, stride: int, offset: float) -> np.ndarray:
    """(N, 5) int64 rois (scale index, x0, y0, x1, y1) of internal boxes (N, 4) in original
    pixels: the scale whose scaled area is nearest 224 x 224 and the cells there (numpy:
    pooling plans its lookups on the host). Every roi lies inside its map (``cell_rows``
    clamps); non-finite boxes raise ArgumentError. The array is column-major (each of the
    five columns contiguous), as pooling reads it."""
    b = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else boxes
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    with np.errstate(over="ignore", invalid="ignore"):
        rois = np.empty((5, b.shape[0]), dtype=np.int64)
        if len(maps.maps) == 1:  # one scale: every window on it
            h, w = maps.maps[0].shape[1:]
            rois[0] = 0
            sides = b.T * maps.factors[0, [0, 1, 0, 1], None]  # (fx, fy, fx, fy) as a column
            limit = np.array([[w - 1], [h - 1]], dtype=np.float64)
        else:
            which = nearest_scale(b, maps.factors)
            rois[0] = which
            sides = b.T * np.tile(maps.factors.T, (2, 1))[:, which]
            sizes = np.array([tuple(m.shape[1:]) for m in maps.maps], dtype=np.float64).reshape(-1, 2)  # h, w
            limit = (sizes[:, ::-1].T - 1)[:, which]
        # The cells are inside their maps for finite scaled boxes only. One sum is cheaper than a
        # test per value; where it overflows, each value is tested. (Huge finite sides are
        # clamped into the map like any other, without overflow warnings.)
        if not np.isfinite(sides.sum()) and not np.isfinite(sides).all():
            bad = b[~np.isfinite(sides).all(0)][0].tolist()
            raise ArgumentError(f"window boxes must be finite (also once scaled to the feature map), got {bad}")
        cell_rows(sides, stride, offset, limit, out=rois[1:])
    return rois.T


class FeatureExtractor:
    """A backbone run over an image pyramid, plus SPP of windows on its maps.

    The backbone is moved to ``device`` and to channels-last memory format in place.
    """

    def __init__(self, backbone: Backbone, scales: Sequence[int] = DEFAULT_SCALES,
                 max_size: int = DEFAULT_MAX_SIZE, device: str | torch.device | None = "cpu",
                 levels: Sequence[int] = DEFAULT_LEVELS):
        scales = tuple(int(s) for s in scales)
        if not scales or min(scales) < 1:
            raise ArgumentError(f"scales must be positive integers, got {scales}")
        self.device = resolve_device(device) if not isinstance(device, torch.device) else device
        # channels-last runs the trunk about 1.4x faster on the CPU (same values).
        self.backbone = backbone.to(self.device, memory_format=torch.channels_last).eval()
        self.scales = scales
        self.max_size = int(max_size)
        self.spp = SpatialPyramidPooling(levels)

    @property
    def dim(self) -> int:
        """Length of one pooled feature vector: channels x number of bins."""
        return self.spp.output_dim(self.backbone.channels)

    def config(self) -> dict:
        """What a cache of these maps records (backbone, weights, layer, scales...)."""
        return {**self.backbone.describe(), "scales": list(self.scales), "max_size": self.max_size}

    def feature_config(self) -> FeatureConfig:
        """The typed feature settings of this extractor (``config()`` plus the SPP levels)."""
        return FeatureConfig.from_dict({**self.config(), "levels": list(self.spp.levels)})

    @torch.inference_mode()
    def conv_maps(self, image_bgr: np.ndarray) -> FeatureMaps:
        """One forward pass of the trunk per scale for a BGR uint8 image."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ArgumentError(f"expected an H x W x 3 BGR image, got shape {image_bgr.shape}")
        hw = (int(image_bgr.shape[0]), int(image_bgr.shape[1]))
        maps = []
        for s in self.scales:
            x = to_input_tensor(image_bgr, s, self.max_size, self.device)
            x = x.contiguous(memory_format=torch.channels_last)
            maps.append(self.backbone(x)[0].to(MAP_DTYPE))
        return FeatureMaps(maps, scale_factors(hw, self.scales, self.max_size), hw, self.scales)

    @torch.inference_mode()
    def pool(self, maps: FeatureMaps, boxes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, D) float32 features of internal boxes (original pixels) on ``maps``."""
        return pool_windows(maps.to(self.device), boxes, self.backbone.stride,
                            self.backbone.offset, self.spp)

    def features(self, image_bgr: np.ndarray, boxes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """conv_maps then pool: (N, D) float32 features of one image's windows."""
        return self.pool(self.conv_maps(image_bgr), boxes)

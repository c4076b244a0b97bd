"""Conv features once per image and scale, spatial pyramid pooling, and the map cache.

Typical use::

    from sppdet.features import get_backbone, FeatureExtractor, FeatureCache
    extractor = FeatureExtractor(get_backbone("mobilenet_v2"), scales=(688,))
    feats = extractor.features(image_bgr, boxes)        # (N, D) float32 tensor
    cache = FeatureCache("cache/features")              # made by `sppdet extract`
    x = cache.pooled(image_id, boxes)                   # (N, D) float32 numpy
"""

from sppdet.features.backbones import BACKBONES, DEFAULT_BACKBONE, Backbone, get_backbone
from sppdet.features.cache import FeatureCache
from sppdet.features.extractor import FeatureExtractor, FeatureMaps, pool_windows
from sppdet.features.mapping import map_windows
from sppdet.features.pyramid import DEFAULT_MAX_SIZE, DEFAULT_SCALES, SINGLE_SCALE, select_scales
from sppdet.features.spp import DEFAULT_LEVELS, SpatialPyramidPooling

__all__ = [
    "BACKBONES", "DEFAULT_BACKBONE", "DEFAULT_LEVELS", "DEFAULT_MAX_SIZE", "DEFAULT_SCALES",
    "SINGLE_SCALE", "Backbone", "FeatureCache", "FeatureExtractor", "FeatureMaps",
    "SpatialPyramidPooling", "get_backbone", "map_windows", "pool_windows", "select_scales",
]

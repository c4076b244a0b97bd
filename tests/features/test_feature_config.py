"""The typed feature configuration and the one comparison that names differing keys."""

from __future__ import annotations

import pytest

from sppdet.errors import ConfigMismatchError, DataError
from sppdet.features.config import (FEATURE_KEYS, FeatureConfig, check_same, describe_differences,
                                    differing_keys)
from sppdet.features.spp import DEFAULT_LEVELS

MANIFEST = {"backbone": "zf5", "weights": "random", "layer": "conv5", "channels": 256, "stride": 16,
            "offset": 0.0, "scales": [480, 688], "max_size": 2000, "levels": [1, 2, 3, 6],
            "proposals": {"method": "ss-fast"}, "hash": "abc"}


def test_round_trip_and_hashable_key():
    cfg = FeatureConfig.from_dict(MANIFEST)
    assert cfg.scales == (480, 688) and cfg.levels == (1, 2, 3, 6) and cfg.channels == 256
    assert cfg.to_dict() == {k: MANIFEST[k] for k in FEATURE_KEYS}  # other keys ignored
    assert list(cfg.to_dict()) == list(FEATURE_KEYS)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    same = FeatureConfig.from_dict({**MANIFEST, "scales": (480, 688)})
    assert hash(same) == hash(cfg) and len({cfg: 1, same: 2}) == 1  # one conv pass for both
    no_levels = {k: v for k, v in MANIFEST.items() if k != "levels"}
    assert FeatureConfig.from_dict(no_levels).levels == DEFAULT_LEVELS


def test_missing_or_bad_keys_are_named():
    with pytest.raises(DataError, match=r"m/config.json: key 'stride': missing"):
        FeatureConfig.from_dict({k: v for k, v in MANIFEST.items() if k not in ("stride", "max_size")},
                                "m/config.json")
    with pytest.raises(DataError, match="key 'channels': must be an integer >= 1, got 'many'"):
        FeatureConfig.from_dict({**MANIFEST, "channels": "many"})


def test_differing_keys_by_brute_force():
    a = dict(MANIFEST)
    cases = [({}, []), ({"scales": [688]}, ["scales"]), ({"levels": (1, 2, 3, 6)}, []),
             ({"weights": "IMAGENET1K_V1", "offset": 8.0}, ["offset", "weights"]),
             ({"extra": None}, ["extra"])]  # a key missing on one side differs even from None
    for change, expected in cases:
        b = {**a, **change}
        assert differing_keys(a, b) == expected
        assert differing_keys(b, a) == expected
    b = {**a, "scales": [688], "layer": "conv4"}
    assert differing_keys(a, b, FEATURE_KEYS) == ["layer", "scales"]  # in the given key order
    assert FeatureConfig.from_dict(a).differences(FeatureConfig.from_dict(b)) == ["layer", "scales"]
    assert describe_differences(a, b, ["layer"], ("cache has", "asked")) == "layer: cache has 'conv5' asked 'conv4'"


def test_check_same_names_the_keys():
    check_same(MANIFEST, {**MANIFEST, "scales": (480, 688)}, "x")
    with pytest.raises(ConfigMismatchError,
                       match=r"model m: made with other features \(max_size: 2000 vs 1000\)"):
        check_same(MANIFEST, {**MANIFEST, "max_size": 1000}, "model m")
    check_same(MANIFEST, {**MANIFEST, "hash": "other"}, "x", keys=FEATURE_KEYS)  # only these keys


def test_cache_and_extractor_report_the_same_typed_config(tmp_path):
    from sppdet.features import FeatureCache, FeatureExtractor, get_backbone

    extractor = FeatureExtractor(get_backbone("zf5", "random"), (64, 96), 500, "cpu")
    cache = FeatureCache.create(tmp_path / "c", {**extractor.config(), "proposals": {}},
                                levels=extractor.spp.levels)
    assert cache.feature_config == extractor.feature_config()
    assert cache.feature_config.scales == (64, 96) and cache.feature_config.levels == DEFAULT_LEVELS

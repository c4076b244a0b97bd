"""The conv-map cache: round trip, pooled features, resume, refusal of a mismatched
configuration, atomic writes; and the ``sppdet extract`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sppdet.cli import cli
from sppdet.errors import ConfigMismatchError, DataError, SppdetError
from sppdet.features import FeatureCache, FeatureExtractor, FeatureMaps, get_backbone, pool_windows
from sppdet.features.spp import SpatialPyramidPooling

CONFIG = {"backbone": "zf5", "weights": "random(seed=0)", "layer": "conv5", "channels": 4,
          "stride": 16, "offset": 0.0, "scales": [64, 96], "max_size": 2000,
          "proposals": {"method": "fixture", "params": {}}}


def fake_maps(seed: int = 0) -> FeatureMaps:
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randn(4, 4, 6, generator=g).half(), torch.randn(4, 6, 8, generator=g).half()]
    factors = np.array([[96 / 75, 64 / 50], [144 / 75, 96 / 50]])
    return FeatureMaps(maps, factors, (50, 75), (64, 96))


def random_boxes(n: int, w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, [w - 2, h - 2], (n, 2))
    wh = rng.uniform(1, [w, h], (n, 2))
    return np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1).astype(np.float32)


def test_round_trip_and_pooled(tmp_path):
    cache = FeatureCache.create(tmp_path / "fc", CONFIG)
    maps = fake_maps()
    assert not cache.has("000001")
    cache.save("000001", maps)
    assert cache.has("000001") and cache.image_ids() == ["000001"]
    back = FeatureCache(tmp_path / "fc").load_maps("000001")
    assert back.scales == maps.scales and back.image_hw == maps.image_hw
    np.testing.assert_array_equal(back.factors, maps.factors)
    for a, b in zip(back.maps, maps.maps):
        assert a.dtype == torch.float16 and torch.equal(a, b)
    boxes = random_boxes(200, 75, 50)
    pooled = cache.pooled("000001", boxes)
    assert pooled.dtype == np.float32 and pooled.shape == (200, 4 * 50) and cache.dim == 200
    want = pool_windows(maps, boxes, 16, 0.0, SpatialPyramidPooling())
    np.testing.assert_array_equal(pooled, want.numpy())
    assert cache.bytes_on_disk() > 0


def test_pooled_equals_direct_extraction(tmp_path):
    extractor = FeatureExtractor(get_backbone("zf5", "random"), scales=(64, 112), max_size=400)
    image = np.random.default_rng(0).integers(0, 255, (90, 130, 3), dtype=np.uint8)
    boxes = random_boxes(150, 130, 90, seed=1)
    cache = FeatureCache.create(tmp_path / "fc", extractor.config())
    cache.save("img", extractor.conv_maps(image))
    direct = extractor.features(image, boxes)
    assert direct.shape == (150, 256 * 50) == (150, extractor.dim)
    np.testing.assert_array_equal(cache.pooled("img", boxes), direct.numpy())


def test_mismatched_configuration_is_refused(tmp_path):
    FeatureCache.create(tmp_path / "fc", CONFIG)
    FeatureCache.create(tmp_path / "fc", dict(CONFIG))  # the same configuration reopens
    other = {**CONFIG, "scales": [688], "backbone": "alexnet"}
    with pytest.raises(ConfigMismatchError) as err:
        FeatureCache.create(tmp_path / "fc", other)
    message = str(err.value)
    assert "scales" in message and "backbone" in message and "weights" not in message
    assert json.loads((tmp_path / "fc" / "manifest.json").read_text())["config"]["scales"] == [64, 96]


def test_unreadable_caches_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not a feature cache"):
        FeatureCache(tmp_path)
    cache = FeatureCache.create(tmp_path / "fc", CONFIG)
    (tmp_path / "fc" / "broken.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="broken.npz"):
        cache.load_maps("broken")
    with pytest.raises(DataError, match="not in the feature cache"):
        cache.pooled("absent", np.zeros((1, 4)))
    with pytest.raises(DataError, match="invalid image id"):
        cache.has("../escape")


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    cache = FeatureCache.create(tmp_path / "fc", CONFIG)

    def crash(f, **arrays):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.save("000001", fake_maps())
    assert not cache.has("000001")
    assert [p.name for p in (tmp_path / "fc").iterdir()] == ["manifest.json"]


# --- the command line ------------------------------------------------------------------

def write_proposals(folder: Path, voc_root: Path, n: int = 40) -> Path:
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"method": "fixture", "params": {"n": n}, "format": 1}))
    for k, line in enumerate((voc_root / "ImageSets" / "Main" / "train.txt").read_text().split()):
        np.savez(folder / f"{line}.npz", boxes=random_boxes(n, 160, 120, seed=k),
                 scores=np.arange(n, 0, -1, dtype=np.float32))
    return folder


def run_extract(*args: str):
    return CliRunner().invoke(cli, ["extract", *args], catch_exceptions=True)


def test_extract_command_resumes_and_refuses_mismatch(make_voc, tmp_path):
    root = make_voc(n_images=3)
    props = write_proposals(tmp_path / "props", root)
    out = tmp_path / "features"
    common = ["--voc", str(root), "--proposals", str(props), "--out", str(out),
              "--backbone", "zf5", "--weights", "random", "--scales", "64,96", "--device", "cpu"]
    first = run_extract(*common, "--limit", "2", "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output)
    assert (summary["extracted"], summary["already_cached"]) == (2, 0)
    assert summary["feature_dim"] == 12800 and summary["bytes_per_image"] > 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    second = run_extract(*common, "--json")  # resumes: only the third image is new
    assert second.exit_code == 0, second.output
    assert (json.loads(second.output)["extracted"], json.loads(second.output)["already_cached"]) == (1, 2)
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in stamps.items())
    cache = FeatureCache(out)
    assert cache.image_ids() == ["000000", "000001", "000002"]
    assert cache.config["proposals"] == {"method": "fixture", "params": {"n": 40}}
    assert cache.pooled("000002", random_boxes(5, 160, 120)).shape == (5, 12800)

    mismatch = run_extract(*[a if a != "64,96" else "64" for a in common])
    assert mismatch.exit_code != 0 and isinstance(mismatch.exception, ConfigMismatchError)
    assert "scales" in str(mismatch.exception)


def test_extract_command_clear_errors(make_voc, tmp_path):
    root = make_voc(n_images=2)
    props = write_proposals(tmp_path / "props", root)
    (props / "000001.npz").unlink()
    base = ["--voc", str(root), "--out", str(tmp_path / "f"), "--backbone", "zf5", "--weights", "random"]
    missing = run_extract(*base, "--proposals", str(props))
    assert isinstance(missing.exception, SppdetError) and "000001" in str(missing.exception)
    nowhere = run_extract(*base, "--proposals", str(tmp_path / "nowhere"))
    assert isinstance(nowhere.exception, SppdetError) and "meta.json" in str(nowhere.exception)
    bad_scale = run_extract(*base, "--proposals", str(props), "--scales", "big")
    assert bad_scale.exit_code == 2 and "--scales" in bad_scale.output
    if not torch.cuda.is_available():
        no_gpu = run_extract(*base, "--proposals", str(props), "--device", "cuda", "--limit", "1")
        assert isinstance(no_gpu.exception, SppdetError) and "CUDA" in str(no_gpu.exception)


def test_real_image_with_imagenet_mobilenet(voc2007_root, torch_home, tmp_path):
    from sppdet.data import VOCDataset

    ds = VOCDataset(voc2007_root, split="train", limit=1)
    image_id = ds.ids[0]
    image = ds.load_image(image_id)
    extractor = FeatureExtractor(get_backbone("mobilenet_v2"), scales=(688,))
    maps = extractor.conv_maps(image)
    h, w = image.shape[:2]
    (mh, mw) = maps.maps[0].shape[1:]
    sh, sw = round(h * 688 / min(h, w)), round(w * 688 / min(h, w))
    assert (mh, mw) == (-(-sh // 16), -(-sw // 16))  # stride 16, padded layers round up
    boxes = ds.annotation(image_id).boxes
    cache = FeatureCache.create(tmp_path / "fc", extractor.config())
    cache.save(image_id, maps)
    feats = cache.pooled(image_id, boxes)
    assert feats.shape == (len(boxes), 4800) and np.isfinite(feats).all()
    np.testing.assert_array_equal(feats, extractor.pool(maps, boxes).numpy())


def test_library_extract_features_equals_the_command(make_voc, tmp_path):
    """``sppdet.extract_features`` writes the maps `sppdet extract` writes."""
    import sppdet
    from sppdet.data import VOCDataset

    root = make_voc(n_images=2)
    props = write_proposals(tmp_path / "props", root)
    common = ["--voc", str(root), "--proposals", str(props), "--backbone", "zf5", "--weights", "random",
              "--scales", "64", "--device", "cpu"]
    assert run_extract(*common, "--out", str(tmp_path / "cli"), "--json").exit_code == 0
    summary = sppdet.extract_features(VOCDataset(root, split="train"), props, tmp_path / "api",
                                      backbone="zf5", weights="random", scales=(64,), device="cpu",
                                      progress=False)
    assert (summary["extracted"], summary["cached_images"], summary["feature_dim"]) == (2, 2, 12800)
    a, b = FeatureCache(tmp_path / "cli"), FeatureCache(tmp_path / "api")
    assert a.config == b.config
    for image_id in ("000000", "000001"):
        for m, n in zip(a.load_maps(image_id).maps, b.load_maps(image_id).maps):
            assert torch.equal(m, n)

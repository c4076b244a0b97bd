"""Conv fine-tuning through SPP: gradients of the pyramid, the stride-32 geometry, training
steps, exact resume, saved models, and refused caches."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from sppdet.errors import ConfigMismatchError, DataError
from sppdet.features.cache import FeatureCache
from sppdet.features.conv_top import build_conv_top, check_top_fits_cache
from sppdet.features.extractor import FeatureMaps
from sppdet.features.geometry import derive_geometry
from sppdet.features.mapping import map_windows
from sppdet.features.pyramid import scale_factors
from sppdet.features.spp import SpatialPyramidPooling
from sppdet.heads.conv_finetune import (BBOX_STDS, ConvFinetuneParams, ConvFinetuner,
                                        sample_windows)
from sppdet.heads.bbox_regression import bbox_targets
from sppdet.heads.model_dir import DetectorModel, load_model, save_model
from sppdet.heads.sources import TrainingImage
from sppdet.boxes import box_iou, mirror_boxes

LEVELS = (1, 2, 3, 6)


# -- the pyramid's gradient --------------------------------------------------------------
def _random_rois(rng: np.random.Generator, h: int, w: int, k: int) -> torch.Tensor:
    x0 = rng.integers(0, w, k)
    y0 = rng.integers(0, h, k)
    x1 = np.minimum(w - 1, x0 + rng.integers(0, w, k))
    y1 = np.minimum(h - 1, y0 + rng.integers(0, h, k))
    return torch.from_numpy(np.stack([x0, y0, x1, y1], 1).astype(np.int64))


def brute_force_spp(fmap: torch.Tensor, rois: torch.Tensor, levels=LEVELS) -> torch.Tensor:
    """The paper's bins by explicit loops: bin i of n over a cells spans
    [floor(i a / n), ceil((i + 1) a / n)); each bin's max over its cells."""
    rows = []
    for x0, y0, x1, y1 in rois.tolist():
        parts = []
        aw, ah = x1 - x0 + 1, y1 - y0 + 1
        for n in levels:
            for i in range(n):
                ys, ye = y0 + (i * ah) // n, y0 + -((-(i + 1) * ah) // n)
                for j in range(n):
                    xs, xe = x0 + (j * aw) // n, x0 + -((-(j + 1) * aw) // n)
                    parts.append(fmap[:, ys:ye, xs:xe].amax(dim=(1, 2)))
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def test_spp_gradient_passes_gradcheck_in_float64():
    rng = np.random.default_rng(0)
    fmap = torch.from_numpy(rng.standard_normal((2, 7, 9))).requires_grad_(True)
    rois = _random_rois(rng, 7, 9, 5)
    spp = SpatialPyramidPooling(LEVELS)
    assert torch.autograd.gradcheck(lambda f: spp(f, rois), (fmap,), eps=1e-6, atol=1e-5)


def test_spp_gradient_matches_a_brute_force_loop():
    """Values and gradients (each bin's upstream gradient lands on its max cell) agree with
    the loop over bins, for windows of every size, one of them the whole map."""
    rng = np.random.default_rng(1)
    data = torch.from_numpy(rng.standard_normal((3, 11, 13)))
    rois = torch.cat([_random_rois(rng, 11, 13, 12), torch.tensor([[0, 0, 12, 10]])])
    spp = SpatialPyramidPooling(LEVELS)
    a = data.clone().requires_grad_(True)
    b = data.clone().requires_grad_(True)
    out_a, out_b = spp(a, rois), brute_force_spp(b, rois)
    # The layout differs (ours: bin-major, channels contiguous); compare values as sets per bin.
    k = len(rois)
    ours = out_a.view(k, -1, 3)  # (K, bins, C)
    ref = out_b.view(k, -1, 3)
    assert torch.equal(ours, ref)
    weights = torch.from_numpy(rng.standard_normal(ours.shape))
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-12)
    assert a.grad.abs().sum() > 0


# -- geometry at stride 32 -----------------------------------------------------------------
def test_mobilenet_blocks_14_to_17_have_stride_32_and_centre_offset_0():
    """Derived geometry against the receptive field measured by back-propagation: the
    input pixels that reach cell (j, j) are centred at 32 j."""
    top = build_conv_top("mobilenet_v2", 18, "random")
    assert (top.stride, top.offset, top.channels) == (32, 0.0, 320)
    import torchvision

    net = torchvision.models.mobilenet_v2(weights=None).features[:18].eval()
    assert derive_geometry(net).stride == 32
    for name, module in list(net.named_modules()):  # linear network: the gradient's support
        for child_name, child in list(module.named_children()):  # is the receptive field
            if isinstance(child, torch.nn.ReLU6):
                setattr(module, child_name, torch.nn.Identity())
    x = torch.randn(1, 3, 64, 1280, requires_grad=True)
    out = net(x)
    for j in (18, 21):
        grad, = torch.autograd.grad(out[0, :, 0, j].sum(), x, retain_graph=True)
        cols = torch.nonzero(grad.abs().sum(dim=(0, 1, 2)) > 0).squeeze(1)
        assert 0 < cols.min() and cols.max() < 1279  # not clipped by the image's edges
        assert (cols.min() + cols.max()).item() / 2 == 32 * j


@pytest.mark.parametrize("box, cells", [
    ((0, 0, 224, 224), (1, 1, 6, 6)),  # left floor(0/32)+1; right ceil(223/32)-1
    ((40, 70, 100, 200), (2, 3, 3, 6)),  # floor(40/32)+1 = 2, ceil(99/32)-1 = 3; y: 3 and 6
    ((64, 64, 96, 96), (2, 2, 2, 2)),  # collapses (left 3 > right 2): the cell nearest the centre
    ((300, 300, 320, 320), (9, 9, 9, 9)),  # clamped to a 10 x 10 map
])
def test_window_mapping_at_stride_32_by_hand(box, cells):
    got = map_windows(np.array([box], np.float64), 32, 0.0, (10, 10))[0].tolist()
    assert tuple(got) == cells


# -- synthetic training data ---------------------------------------------------------------
SCALES = (96, 160)
HW = (120, 160)


def _images(n: int, rng: np.random.Generator) -> list[TrainingImage]:
    images = []
    for k in range(n):
        x1, y1 = rng.uniform(5, 60), rng.uniform(5, 40)
        gt = np.array([[x1, y1, x1 + rng.uniform(40, 90), y1 + rng.uniform(30, 70)]])
        jitter = np.repeat(gt, 12, 0) + rng.uniform(-10, 10, (12, 4))
        xy = rng.uniform(0, 100, (30, 2))
        rand = np.concatenate([xy, xy + rng.uniform(10, 60, (30, 2))], 1)
        props = np.clip(np.concatenate([jitter, rand]), 0, [160, 120, 160, 120])
        props = props[(props[:, 2] - props[:, 0] > 2) & (props[:, 3] - props[:, 1] > 2)]
        images.append(TrainingImage(f"{k:06d}", props, gt, np.array([k % 2]), np.array([False])))
    return images


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A feature cache of random 96-channel maps (MobileNetV2's block-13 shape) with a
    class-dependent signal under each object, and matching training images."""
    rng = np.random.default_rng(3)
    directory = tmp_path_factory.mktemp("conv_ft") / "feats"
    config = {"backbone": "mobilenet_v2", "weights": "random(seed=0)", "layer": "features[:14]",
              "channels": 96, "stride": 16, "offset": 0.0, "scales": list(SCALES), "max_size": 2000}
    cache = FeatureCache.create(directory, config)
    images = _images(10, rng)
    factors = scale_factors(HW, SCALES, 2000)
    for ti in images:
        maps = []
        for (fx, fy) in factors:
            h, w = max(1, round(HW[0] * fy / 16)), max(1, round(HW[1] * fx / 16))
            m = rng.standard_normal((96, h, w)).astype(np.float32) * 0.5
            x0, y0, x1, y1 = ti.gt_boxes[0] * [fx / 16, fy / 16, fx / 16, fy / 16]
            m[int(ti.gt_labels[0]) * 8:(int(ti.gt_labels[0]) + 1) * 8,
              int(y0):int(math.ceil(y1)), int(x0):int(math.ceil(x1))] += 2.0
            maps.append(torch.from_numpy(m).half())
        cache.save(ti.image_id, FeatureMaps(maps, factors, HW, SCALES))
    return cache, images


SMALL = ConvFinetuneParams(hidden=16, dropout=0.0, iterations=6, lr=0.001, lr_step=4,
                           rois_per_image=16, moment_images=4)


def _trainer(synthetic, params=SMALL) -> ConvFinetuner:
    cache, images = synthetic
    return ConvFinetuner(images, cache, build_conv_top("mobilenet_v2", 18, "random"), 2, params)


def test_sampled_windows_are_labelled_and_pooled_at_their_own_scale(synthetic):
    cache, images = synthetic
    params = replace(SMALL, rois_per_image=32)
    from sppdet.features.pyramid import nearest_scale

    for i, ti in enumerate(images):
        maps = cache.load_maps(ti.image_id)
        s = sample_windows(ti, maps.factors, [0, 1], params, np.random.default_rng(i))
        assert s is not None and len(s.labels) <= 32
        assert (s.labels > 0).sum() <= round(32 * params.fg_fraction)
        assert np.all(nearest_scale(s.boxes, maps.factors) == s.scale_index)
        iou = box_iou(s.boxes, ti.gt_boxes).max(1)
        assert np.all((s.labels > 0) == (iou >= 0.5))
        assert np.all(iou[s.labels == 0] >= 0.1)
        fg = s.labels > 0
        assert np.all(s.labels[fg] == ti.gt_labels[0] + 1)
        want = bbox_targets(s.boxes[fg], np.repeat(ti.gt_boxes, fg.sum(), 0)) / np.asarray(BBOX_STDS)
        assert np.allclose(s.targets[fg], want, atol=1e-5) and not s.targets[~fg].any()


def test_training_steps_lower_the_loss_and_move_the_conv_weights(synthetic):
    trainer = _trainer(synthetic, replace(SMALL, lr=0.01))
    trainer.measure_moments()
    before_top = [p.detach().clone() for p in trainer.top.parameters()]
    with torch.no_grad():
        first, _ = trainer.loss(0)
    for _ in range(5):
        loss, _ = trainer.loss(0)
        trainer.opt.zero_grad()
        loss.backward()
        trainer.opt.step()
    with torch.no_grad():
        after, _ = trainer.loss(0)
    assert float(after) < float(first)
    assert any(not torch.equal(a, p) for a, p in zip(before_top, trainer.top.parameters()))


def test_frozen_top_keeps_its_weights(synthetic):
    trainer = _trainer(synthetic, replace(SMALL, train_top=False))
    before = [p.detach().clone() for p in trainer.top.parameters()]
    trainer.train(progress=False)
    assert all(torch.equal(a, p) for a, p in zip(before, trainer.top.parameters()))


def test_resumed_run_equals_the_uninterrupted_one(synthetic, tmp_path):
    params = replace(SMALL, dropout=0.3)
    straight = _trainer(synthetic, params).train(progress=False)
    ckpt = tmp_path / "ckpt.npz"
    _trainer(synthetic, params).train(ckpt, checkpoint_every=2, stop_after=3, progress=False)
    assert ckpt.is_file()
    with np.load(ckpt, allow_pickle=False) as data:  # nothing in it needs unpickling
        assert len(data.files) > 1
    resumed = _trainer(synthetic, params).train(ckpt, checkpoint_every=2, progress=False)
    for a, b in zip(straight.fc.state_dict().values(), resumed.fc.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.top.state_dict().values(), resumed.top.state_dict().values()):
        assert torch.equal(a, b)
    # A checkpoint of other settings is refused with a clear error.
    _trainer(synthetic, params).train(ckpt, stop_after=2, progress=False)
    with pytest.raises(DataError, match="other settings"):
        _trainer(synthetic, replace(params, lr=0.5)).train(ckpt, progress=False)


def test_saved_model_gives_the_same_scores_after_reload(synthetic, tmp_path):
    cache, images = synthetic
    result = _trainer(synthetic).train(progress=False)
    config = {**cache.config, "levels": list(LEVELS), "head": "softmax", "classes": ["cat", "dog"],
              "feature_scale": 1.0, "bbox_regression": True, "test": {}}
    model = DetectorModel(config, None, None, None, result.fc, conv_top=result.top)
    save_model(tmp_path / "m", model)
    loaded = load_model(tmp_path / "m")
    assert loaded.conv_top is not None and loaded.head == "softmax"

    class _Extractor:  # what DetectorModel.pool needs of a FeatureExtractor
        device = torch.device("cpu")
        spp = SpatialPyramidPooling(LEVELS)

    maps = cache.load_maps(images[0].image_id)
    windows = images[0].windows()
    p1 = model.pool(maps, windows, _Extractor())
    p2 = loaded.pool(maps, windows, _Extractor())
    assert np.array_equal(p1, p2)
    s1, b1 = model.predict(p1, windows)
    s2, b2 = loaded.predict(p2, windows)
    assert np.array_equal(s1, s2) and np.array_equal(b1, b2)
    assert s1.shape == (len(windows), 2) and b1.shape == (len(windows), 2, 4)
    assert np.all((s1 >= 0) & (s1 <= 1)) and np.isfinite(b1).all()


def test_a_cache_of_other_weights_is_refused(synthetic):
    cache, _ = synthetic
    top = build_conv_top("mobilenet_v2", 18, "random")
    check_top_fits_cache(top.config, cache.config, "cache")  # the same weights: accepted
    with pytest.raises(ConfigMismatchError, match="weights"):
        check_top_fits_cache(top.config, {**cache.config, "weights": "IMAGENET1K_V1"}, "cache")
    with pytest.raises(ConfigMismatchError, match="backbone"):
        check_top_fits_cache(top.config, {**cache.config, "backbone": "vgg16"}, "cache")


def test_reduce_layer_shrinks_the_feature_and_trains_with_a_frozen_top(synthetic, tmp_path):
    cache, images = synthetic
    top = build_conv_top("mobilenet_v2", 18, "random", reduce=24)
    assert top.channels == 24 and top.config.reduce == 24 and top.stride == 32
    trainer = ConvFinetuner(images, cache, top, 2, replace(SMALL, train_top=False))
    assert trainer.fc.in_dim == 24 * 50
    blocks = {k: v.clone() for k, v in top.layers.state_dict().items() if not k.startswith("reduce")}
    reduce_before = top.layers.reduce.weight.detach().clone()
    result = trainer.train(progress=False)
    after = result.top.layers.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in blocks.items())
    assert not torch.equal(reduce_before, result.top.layers.reduce.weight)
    config = {**cache.config, "levels": list(LEVELS), "head": "softmax", "classes": ["cat", "dog"],
              "feature_scale": 1.0, "bbox_regression": True, "test": {}}
    save_model(tmp_path / "m", DetectorModel(config, None, None, None, result.fc, conv_top=result.top))
    loaded = load_model(tmp_path / "m")
    assert loaded.conv_top.config == result.top.config
    fmap = cache.load_maps(images[0].image_id).maps[0]
    with torch.no_grad():
        assert torch.equal(loaded.conv_top.apply_to_map(fmap), result.top.apply_to_map(fmap))


# -- conv fine-tuning on mirrored copies -----------------------------------------------------

@pytest.fixture()
def flipped_synthetic(synthetic, tmp_path):
    """The conv fine-tuning cache of tests/heads, with mirrored maps of every image (the maps
    mirrored along x stand in for those of the mirrored image)."""
    cache, images = synthetic
    for ti in images:
        maps = cache.load_maps(ti.image_id)
        maps.maps = [torch.flip(m, dims=(2,)) for m in maps.maps]
        cache.save(ti.image_id, maps, flipped=True)
    yield cache, images
    for ti in images:
        cache.path(ti.image_id, flipped=True).unlink()


def test_flip_samples_mirrored_images_with_their_mirrored_maps(flipped_synthetic):
    cache, images = flipped_synthetic
    trainer = _trainer((cache, images), replace(SMALL, flip=True))
    by_id = {ti.image_id: ti for ti in images}
    seen = set()
    for it in range(20):
        ti, maps, sample = trainer._sample(it, 0)
        orig = by_id[ti.image_id]
        width = maps.image_hw[1]
        flipped = not np.array_equal(ti.gt_boxes, orig.gt_boxes)
        seen.add(flipped)
        want = cache.load_maps(ti.image_id, flipped=flipped)
        assert torch.equal(maps.maps[0], want.maps[0])
        if flipped:
            np.testing.assert_array_equal(ti.gt_boxes, mirror_boxes(orig.gt_boxes, width))
            np.testing.assert_array_equal(ti.proposals, mirror_boxes(orig.proposals, width))
    assert seen == {True, False}
    result = trainer.train(progress=False)
    assert result.summary["iterations"] == SMALL.iterations


def test_flip_without_mirrored_maps_is_a_clear_error(synthetic):
    cache, images = synthetic
    with pytest.raises(DataError, match="extract --flip"):
        _trainer((cache, images), replace(SMALL, flip=True))

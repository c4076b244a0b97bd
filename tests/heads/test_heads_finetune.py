"""Fine-tuning the fc layers: window sampling, batch composition, learning, resuming."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sppdet.boxes import box_iou
from sppdet.heads.fc_head import FcHead
from sppdet.heads.finetune import (FinetuneParams, batch_indices, build_window_pool, input_moments,
                                   sample_image_windows, train_fc)
from sppdet.heads.mining import MiningParams
from sppdet.heads.scaling import estimate_scale
from sppdet.heads.train import TrainParams, train_heads
from tests.heads.synthetic_heads import SyntheticSource, make_images

SMALL = FinetuneParams(hidden=32, iterations=300, lr_step=200, batch_size=32, lr=0.05,
                       fg_per_image=8, bg_per_image=24, dropout=0.1)


@pytest.fixture(scope="module")
def data():
    images = make_images(30, 3, seed=5, n_random=80)
    source = SyntheticSource(images, 3, noise=0.02)
    scale, _ = estimate_scale(images, source, num_images=10)
    pool = build_window_pool(images, source, scale, SMALL, progress=False)
    return images, source, scale, pool


def test_sampled_windows_have_the_right_labels():
    """Brute force: label = class of the best GT when IoU >= 0.5, 0 when IoU in [0.1, 0.5)."""
    images = make_images(8, 3, seed=6)
    for i, ti in enumerate(images):
        boxes, labels = sample_image_windows(ti, i, SMALL)
        for box, label in zip(boxes, labels):
            ious = box_iou(box[None], ti.gt_boxes)[0]
            if label > 0:
                assert ious.max() >= 0.5 and ti.gt_labels[ious.argmax()] + 1 == label
            else:
                assert 0.1 <= ious.max() < 0.5
        assert (labels > 0).sum() <= SMALL.fg_per_image and (labels == 0).sum() <= SMALL.bg_per_image


def test_batches_are_one_quarter_foreground(data):
    *_, pool = data
    for t in (0, 1, 57):
        rows = batch_indices(pool, SMALL, t)
        assert len(rows) == SMALL.batch_size
        assert (pool.labels[rows] > 0).sum() == SMALL.batch_size // 4
    # Consecutive batches walk through the foreground without repeats within an epoch.
    fg = np.concatenate([batch_indices(pool, SMALL, t)[:8] for t in range(pool.num_fg // 8)])
    assert len(set(fg.tolist())) == len(fg)


def test_fc_head_learns_and_resume_equals_uninterrupted(data, tmp_path):
    images, source, scale, pool = data
    fc, summary = train_fc(pool, 3, SMALL, progress=False)
    assert summary["pool_fg_accuracy"] > 0.8 and summary["pool_bg_accuracy"] > 0.8
    ckpt = tmp_path / "ft.ckpt"
    train_fc(pool, 3, SMALL, checkpoint=ckpt, checkpoint_every=100, stop_after=150, progress=False)
    assert ckpt.is_file()
    resumed, s2 = train_fc(pool, 3, SMALL, checkpoint=ckpt, checkpoint_every=100, progress=False)
    assert s2["iterations_run"] == SMALL.iterations - 150
    for (k, a), (_, b) in zip(fc.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(Exception, match="other settings"):
        train_fc(pool, 3, replace(SMALL, lr=0.1), checkpoint=ckpt, progress=False)


def test_svms_on_fc7_features(data):
    images, source, scale, pool = data
    fc, _ = train_fc(pool, 3, SMALL, progress=False)
    p = TrainParams(mining=MiningParams(retrain_every=300), norm_images=10)
    heads = train_heads(images, source, ["a", "b", "c"], p, fc=fc, feature_scale=scale, progress=False)
    assert heads.svm_W.shape == (3, SMALL.hidden) and heads.fc7_scale > 0
    assert heads.bbox.W.shape[1] == pool.x.shape[1]  # box regression stays on pooled features
    model = heads.to_model(["a", "b", "c"], fc=fc)
    hits = 0
    total = 0
    for ti in images:
        s = model.score(source.pooled(ti.image_id, ti.gt_boxes))
        hits += int((s.argmax(1) == ti.gt_labels).sum())
        total += ti.num_gt
    assert hits / total > 0.9
    with pytest.raises(ValueError):
        train_heads(images, source, ["a", "b", "c"], p, fc=fc, progress=False)


def test_folding_the_input_standardisation_into_fc6():
    """fc6 on raw inputs after folding == fc6 on standardised inputs before (brute force)."""
    torch.manual_seed(0)
    fc = FcHead(12, 8, 3).eval()
    x = torch.rand(20, 12) * 5 + 3
    mean, std = x.mean(0), x.std(0) + 0.1
    with torch.no_grad():
        before = fc((x - mean) / std)
    fc.fold_input_standardisation(mean, std)
    with torch.no_grad():
        after = fc(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_input_moments_match_numpy():
    rng = np.random.default_rng(0)
    x = (rng.normal(2, 3, (1000, 5)) * [1, 1, 1, 1, 0]).astype(np.float16)
    mean, std = input_moments(x, chunk=128)
    xf = x.astype(np.float64)
    np.testing.assert_allclose(mean, xf.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std[:4], xf.std(0)[:4], rtol=1e-4)
    assert std[4] > 0  # a constant dimension gets a floor, not a division by zero

"""Head training end to end on a synthetic feature source."""

from __future__ import annotations

import numpy as np
import pytest

from sppdet.boxes import box_iou
from sppdet.heads.bbox_regression import BoxRegParams
from sppdet.heads.mining import MiningParams
from sppdet.heads.model_dir import load_model, save_model
from sppdet.heads.sources import best_gt, class_overlaps
from sppdet.heads.train import TrainParams, train_heads
from tests.heads.synthetic_heads import SyntheticSource, make_images

CLASSES = ["a", "b", "c"]
PARAMS = TrainParams(mining=MiningParams(retrain_every=200), bbox=BoxRegParams(lam=1.0), norm_images=10)


@pytest.fixture(scope="module")
def trained():
    images = make_images(40, 3, seed=0)
    source = SyntheticSource(images, 3)
    heads = train_heads(images, source, CLASSES, PARAMS, progress=False)
    source.calls_after_training = dict(source.calls)
    return images, source, heads


def test_svms_separate_gt_from_negatives(trained):
    images, source, heads = trained
    pos, neg = [], []
    for ti in images:
        w = ti.windows()
        x = source.pooled(ti.image_id, w) * np.float32(heads.feature_scale)
        s = x @ heads.svm_W.T + heads.svm_b
        ov = class_overlaps(w, ti.gt_boxes, ti.gt_labels, 3)
        pos.append(s[np.arange(ti.num_gt), ti.gt_labels])
        neg.append(s[ov < 0.3])
    assert np.concatenate(pos).min() > 0
    assert np.concatenate(neg).max() < 0
    s = heads.summary
    assert s["mining_rounds"] >= 3 and s["positives"] == sum(ti.num_gt for ti in images)
    assert set(s["per_class"]) == set(CLASSES) and s["untrained_classes"] == []


def test_features_scaled_to_mean_norm_20(trained):
    images, source, heads = trained
    x = np.concatenate([source.pooled(ti.image_id, ti.windows()) for ti in images])
    mean = np.linalg.norm(x * heads.feature_scale, axis=1).mean()
    assert mean == pytest.approx(20.0, rel=0.1)  # estimated on a sample, checked on all


def test_each_image_is_pooled_once_per_pass(trained):
    images, source, heads = trained
    # Pass 1 (positives) + pass 2 (mining) + at most one for the scale sample.
    for ti in images:
        assert 2 <= source.calls_after_training[ti.image_id] <= 3


def test_box_regression_moves_windows_towards_ground_truth(trained):
    images, source, heads = trained
    before, after = [], []
    for ti in images:
        w = ti.proposals
        iou, arg = best_gt(w, ti.gt_boxes)
        sel = iou >= 0.5
        if not sel.any():
            continue
        x = source.pooled(ti.image_id, w[sel]) * np.float32(heads.feature_scale)
        out = heads.bbox.predict(x, w[sel], ti.gt_labels[arg[sel]])
        before.append(iou[sel])
        after.append(box_iou(out, ti.gt_boxes)[np.arange(sel.sum()), arg[sel]])
    assert np.mean(np.concatenate(after)) > np.mean(np.concatenate(before)) + 0.05


def test_training_is_deterministic_and_model_round_trips(trained, tmp_path):
    images, source, heads = trained
    again = train_heads(images, SyntheticSource(images, 3), CLASSES, PARAMS, progress=False)
    np.testing.assert_array_equal(heads.svm_W, again.svm_W)
    np.testing.assert_array_equal(heads.svm_b, again.svm_b)
    np.testing.assert_array_equal(heads.bbox.W, again.bbox.W)
    model = heads.to_model(CLASSES, features={"backbone": "synthetic", "levels": [1, 2]})
    save_model(tmp_path / "m", model)
    loaded = load_model(tmp_path / "m")
    ti = images[0]
    pooled = source.pooled(ti.image_id, ti.windows())
    np.testing.assert_array_equal(loaded.score(pooled), model.score(pooled))
    expected = (pooled * np.float32(heads.feature_scale)) @ heads.svm_W.T + heads.svm_b
    np.testing.assert_allclose(loaded.score(pooled), expected, rtol=1e-5, atol=1e-5)
    assert loaded.config["backbone"] == "synthetic" and loaded.config["test"]["nms_iou"] == 0.3


def test_difficult_positives_option_and_missing_class():
    images = make_images(30, 4, seed=3)
    images = [ti.__class__(ti.image_id, ti.proposals, ti.gt_boxes, np.minimum(ti.gt_labels, 2),
                           ti.gt_difficult) for ti in images]  # class 3 never occurs
    source = SyntheticSource(images, 4)
    n_difficult = sum(int(ti.gt_difficult.sum()) for ti in images)
    assert n_difficult > 0
    p = TrainParams(use_difficult=False, bbox=None, norm_images=5)
    heads = train_heads(images, source, list("abcd"), p, progress=False)
    assert heads.summary["positives"] == sum(ti.num_gt for ti in images) - n_difficult
    assert heads.summary["untrained_classes"] == ["d"]
    assert heads.svm_b[3] == -np.inf and heads.bbox is None


class InterruptingSource(SyntheticSource):
    """Raises KeyboardInterrupt the first time it pools image ``at`` in the mining pass."""

    def __init__(self, *args, at: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.at, self.fired = at, False

    def pooled(self, image_id, boxes):
        ti = self.by_id[image_id]
        if image_id == self.at and not self.fired and len(boxes) == ti.num_gt + len(ti.proposals):
            self.fired = True
            raise KeyboardInterrupt
        return super().pooled(image_id, boxes)


def test_interrupted_run_resumes_to_the_same_result(trained, tmp_path):
    images, _, heads = trained
    ckpt = tmp_path / "ckpt"
    src = InterruptingSource(images, 3, at=images[27].image_id)
    with pytest.raises(KeyboardInterrupt):
        train_heads(images, src, CLASSES, PARAMS, progress=False, checkpoint_dir=ckpt, checkpoint_every=10)
    assert (ckpt / "positives.npz").is_file() and (ckpt / "mining.npz").is_file()
    src2 = SyntheticSource(images, 3)
    resumed = train_heads(images, src2, CLASSES, PARAMS, progress=False, checkpoint_dir=ckpt,
                          checkpoint_every=10)
    assert resumed.summary["resumed_at_image"] == 20
    # Pass 1 was not repeated: images before 20 were only re-pooled for cached windows.
    assert all(src2.calls.get(ti.image_id, 0) <= 1 for ti in images[:20])
    assert all(src2.calls[ti.image_id] == 1 for ti in images[20:])
    np.testing.assert_array_equal(resumed.svm_W, heads.svm_W)
    np.testing.assert_array_equal(resumed.svm_b, heads.svm_b)
    np.testing.assert_array_equal(resumed.bbox.W, heads.bbox.W)
    for c in CLASSES:  # the same mining history (timings aside)
        a, b = resumed.summary["per_class"][c], heads.summary["per_class"][c]
        assert {k: v for k, v in a.items() if k != "fit_seconds"} == {k: v for k, v in b.items() if k != "fit_seconds"}
    assert not ckpt.exists()  # removed after success
    # A checkpoint of other settings is refused.
    with pytest.raises(KeyboardInterrupt):
        train_heads(images, InterruptingSource(images, 3, at=images[27].image_id), CLASSES, PARAMS,
                    progress=False, checkpoint_dir=ckpt, checkpoint_every=10)
    with pytest.raises(Exception, match="other settings"):
        train_heads(images, src2, CLASSES, TrainParams(seed=1), progress=False, checkpoint_dir=ckpt)

"""Training records and window overlaps, against brute force."""

from __future__ import annotations

import numpy as np

from sppdet.boxes import box_iou
from sppdet.data import VOCDataset
from sppdet.heads.scaling import estimate_scale, sample_windows
from sppdet.heads.sources import DatasetImages, TrainingImage, best_gt, class_overlaps
from tests.heads.synthetic_heads import SyntheticSource, make_images, random_boxes


def test_class_overlaps_and_best_gt_match_brute_force():
    rng = np.random.default_rng(0)
    boxes, gt = random_boxes(rng, 50), random_boxes(rng, 6)
    gt[3] = boxes[7]  # an exact match
    labels = np.array([2, 0, 2, 1, 0, 2])
    ov = class_overlaps(boxes, gt, labels, 4)
    iou, arg = best_gt(boxes, gt)
    for i, b in enumerate(boxes):
        per = [box_iou(b[None], g[None])[0, 0] for g in gt]
        for c in range(4):
            expected = max([v for v, lab in zip(per, labels) if lab == c], default=0.0)
            assert abs(ov[i, c] - expected) < 1e-12
        assert abs(iou[i] - max(per)) < 1e-12 and arg[i] == int(np.argmax(per))
    assert ov[7, 1] == 1.0
    assert class_overlaps(boxes, np.zeros((0, 4)), np.zeros(0, np.int64), 3).shape == (50, 3)
    assert best_gt(boxes, np.zeros((0, 4)))[1].tolist() == [-1] * 50


def test_dataset_images_reads_annotations_and_proposals(make_voc):
    root = make_voc(n_images=3, classes=("cat", "dog"))
    ds = VOCDataset(root, split="train", classes=("cat", "dog"))

    class Props:
        def load(self, image_id):
            return np.array([[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 50.0, 60.0]], np.float32)

    images = DatasetImages(ds, Props())
    assert len(images) == 3
    ti = images[1]
    ann = ds.annotation(ds.ids[1])
    assert isinstance(ti, TrainingImage) and ti.image_id == ds.ids[1]
    np.testing.assert_array_equal(ti.gt_boxes, ann.boxes)
    assert ti.gt_labels.tolist() == [1] and ti.windows().shape == (3, 4)
    np.testing.assert_array_equal(ti.windows()[0], ann.boxes[0])
    assert [t.image_id for t in images] == ds.ids and len(images[0:2]) == 2


def test_scale_gives_mean_norm_target_on_the_sample():
    images = make_images(12, 3, seed=1)
    source = SyntheticSource(images, 3)
    scale, mean_norm = estimate_scale(images, source, num_images=5, windows_per_image=30, seed=3)
    sample = sample_windows(images, 5, 30, seed=3)
    norms = np.concatenate([np.linalg.norm(source.pooled(images[i].image_id, b), axis=1) for i, b in sample])
    assert abs(mean_norm - norms.mean()) < 1e-4 * mean_norm
    assert abs(scale * norms.mean() - 20.0) < 1e-3
    assert len(sample) == 5 and all(len(b) == 30 for _, b in sample)

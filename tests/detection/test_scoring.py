"""The torch scoring path (heads.scoring, Detector.detect_windows) against the numpy path it
replaced, kept here verbatim as the reference: scores to ~1e-5 relative, and the same
detections in the same order after NMS, for the shipped model (fc7 head, int8, rank-384
fc6, ridge box regression), a pool-head model and a softmax-head model with box deltas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms

from sppdet.boxes import clip_boxes
from sppdet.detector import DetectionParams, Detector
from sppdet.heads.bbox_regression import BoxRegressor
from sppdet.heads.bbox_regression import apply_deltas as apply_deltas_np
from sppdet.heads.fc_head import FcHead
from sppdet.heads.model_dir import DetectorModel, load_model, save_model
from sppdet.heads.scoring import BBOX_STDS, apply_deltas
from sppdet.models import SVM_MODEL, shipped_model_dir


# ---- the numpy implementation before the torch path (reference) -------------------------
def old_predict(model: DetectorModel, pooled: np.ndarray, boxes: np.ndarray, bbox_reg: bool = True):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n, C = len(boxes), len(model.classes)
    x = np.asarray(pooled, np.float32) * np.float32(model.feature_scale)
    unregressed = np.repeat(boxes[:, None, :], C, axis=1)
    if model.head != "softmax":
        feats = x
        if model.head == "fc7":
            feats = model.fc.fc7_numpy(x) * np.float32(model.config["fc7_scale"])
        scores = (feats @ model.svm_W.T).astype(np.float64) + model.svm_b.astype(np.float64)
        if not bbox_reg or model.bbox is None:
            return scores, unregressed
        return scores, model.bbox.predict(x, boxes, None)
    with torch.no_grad():
        logits, d = model.fc.eval().forward_all(torch.from_numpy(x))
        probs = torch.softmax(logits, 1)[:, 1:].double().numpy()
    if not bbox_reg or not model.config.get("bbox_regression", False):
        return probs, unregressed
    d = d.double().numpy() * np.asarray(BBOX_STDS)[None, None, :]
    return probs, apply_deltas_np(np.repeat(boxes, C, axis=0), d.reshape(-1, 4)).reshape(n, C, 4)


def old_nms_per_class(boxes, scores, params, image_hw):
    rows, labels = np.nonzero(scores > params.thresholds(scores.shape[1])[None, :])
    if rows.size == 0:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    cand = clip_boxes(boxes[rows, labels], image_hw[1], image_hw[0])
    cand_scores = scores[rows, labels]
    keep = batched_nms(torch.from_numpy(cand), torch.from_numpy(cand_scores),
                       torch.from_numpy(labels), params.nms_iou).numpy()
    keep = keep[: params.max_per_image]
    return cand[keep], cand_scores[keep], labels[keep].astype(np.int64)


def old_detect_windows(detector: Detector, windows, maps, image_hw):
    all_boxes, all_scores = [], []
    for model in detector.models:
        key = next(iter(detector.extractors))
        pooled = model.pool(maps[key], windows, detector.extractors[key])
        s, b = old_predict(model, pooled, windows, bbox_reg=detector.bbox_reg)
        all_scores.append(s)
        all_boxes.append(b)
    return old_nms_per_class(np.concatenate(all_boxes), np.concatenate(all_scores), detector.params, image_hw)
# -----------------------------------------------------------------------------------------


def random_windows(rng, n, h, w):
    xy = rng.uniform(0, [w - 20, h - 20], (n, 2))
    wh = rng.uniform(12, [w, h], (n, 2))
    return np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).round(0)


def distinct_windows(windows, maps):
    """Windows whose pooled cells differ (equal features give equal scores, whose order the
    old path left to an unstable sort; the new one ranks them by index: test_detector)."""
    from sppdet.features.mapping import map_windows, scale_boxes
    from sppdet.features.pyramid import nearest_scale

    fm = next(iter(maps.values()))
    which = nearest_scale(windows, fm.factors)
    sizes = torch.tensor([m.shape[1:] for m in fm.maps])[torch.from_numpy(which)]
    cells = map_windows(scale_boxes(windows, fm.factors[which]), 16, 0.0, sizes).numpy()
    _, first = np.unique(np.concatenate([which[:, None], cells], 1), axis=0, return_index=True)
    return windows[np.sort(first)]


def softmax_model(dim: int, classes: list[str], seed: int, config: dict) -> DetectorModel:
    torch.manual_seed(seed)
    fc = FcHead(dim, 64, len(classes), bbox=True)
    with torch.no_grad():
        fc.bbox_pred.weight.normal_(0, 0.02)  # deltas large enough to move boxes visibly
    cfg = {**config, "head": "softmax", "classes": classes, "bbox_regression": True,
           "feature_scale": 0.3, "fc7_scale": None}
    return DetectorModel(cfg, None, None, None, fc.eval())


def pool_model(dim: int, classes: list[str], seed: int, config: dict) -> DetectorModel:
    rng = np.random.default_rng(seed)
    C = len(classes)
    bbox = BoxRegressor(rng.normal(0, 1e-3, (C, dim, 4)).astype(np.float32),
                        rng.normal(0, 0.1, (C, 4)).astype(np.float32),
                        rng.normal(0, 0.05, (C, 4)).astype(np.float32),
                        rng.uniform(0.05, 0.3, (C, 4)).astype(np.float32))
    cfg = {**config, "head": "pool", "classes": classes, "feature_scale": 0.37, "fc7_scale": None}
    return DetectorModel(cfg, rng.normal(0, 0.02, (C, dim)).astype(np.float32),
                         rng.normal(-1, 0.3, C).astype(np.float32), bbox)


@pytest.fixture(scope="module")
def shipped():
    return load_model(shipped_model_dir(SVM_MODEL))


def assert_scores_close(new, ref):
    tol = 1e-5 * np.abs(ref).max()
    np.testing.assert_allclose(new, ref, rtol=1e-5, atol=tol)


def test_shipped_model_scores_and_boxes_match_numpy_path(shipped):
    assert shipped.fc.fc6_factors() is not None  # runs as two thin products (rank 384)
    rng = np.random.default_rng(0)
    dim = shipped.fc.in_dim
    pooled = np.maximum(rng.normal(0, 1.0, (300, dim)), 0).astype(np.float32) * 2.0
    windows = random_windows(rng, 300, 375, 500)
    ref_s, ref_b = old_predict(shipped, pooled, windows)
    new_s, new_b = shipped.predict(pooled, windows)
    assert_scores_close(new_s, ref_s)
    np.testing.assert_allclose(new_b, ref_b, rtol=0, atol=1e-3)
    np.testing.assert_allclose(shipped.regress(pooled, windows, 3), ref_b[:, 3], atol=1e-3)


@pytest.mark.parametrize("make", [softmax_model, pool_model])
def test_other_heads_match_numpy_path(make, tmp_path):
    from sppdet.features.backbones import get_backbone

    dim = 96 * 50
    config = {**get_backbone("mobilenet_v2", "random").describe(), "scales": [224], "max_size": 1000,
              "levels": [1, 2, 3, 6]}
    model = make(dim, ["a", "b", "c"], 0, config)
    save_model(tmp_path / "m", model)
    loaded = load_model(tmp_path / "m")
    rng = np.random.default_rng(1)
    pooled = np.maximum(rng.normal(0, 1, (200, dim)), 0).astype(np.float32)
    windows = random_windows(rng, 200, 200, 300)
    for m in (model, loaded):
        ref_s, ref_b = old_predict(m, pooled, windows)
        new_s, new_b = m.predict(pooled, windows)
        assert_scores_close(new_s, ref_s)
        np.testing.assert_allclose(new_b, ref_b, atol=1e-3)
        assert np.abs(new_b - windows[:, None]).max() > 1  # the deltas did move the boxes


def _images(voc_root):
    if voc_root is None:
        rng = np.random.default_rng(3)
        return [("synthetic", rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))]
    from sppdet.data import VOCDataset

    ds = VOCDataset(voc_root, split="train", limit=2)
    return [(i, ds.load_image(i)) for i in ds.ids]


@pytest.mark.parametrize("real", [False, True], ids=["synthetic", "voc"])
def test_detections_identical_to_numpy_path(real, torch_home, request):
    voc = request.getfixturevalue("voc2007_root") if real else None
    shipped = load_model(shipped_model_dir(SVM_MODEL))
    shipped.config = {**shipped.config, "scales": [480]}  # one scale: fast
    other = pool_model(shipped.fc.in_dim, shipped.classes, 5, shipped.config)
    params = DetectionParams(score_threshold=-1.2, nms_iou=0.3, max_per_image=100)
    for models in ([shipped], [shipped, other]):
        detector = Detector(models, "cpu", params)
        assert len(detector.extractors) == 1
        rng = np.random.default_rng(7)
        for image_id, image in _images(voc):
            h, w = image.shape[:2]
            maps = detector.conv_maps(image)
            windows = distinct_windows(random_windows(rng, 600, h, w), maps)
            ref_b, ref_s, ref_l = old_detect_windows(detector, windows, maps, (h, w))
            dets = detector.detect_windows(windows, maps, (h, w), image_id)
            assert len(ref_s) > 10, image_id
            assert dets.labels.tolist() == ref_l.tolist(), image_id
            assert_scores_close(dets.scores, ref_s)
            np.testing.assert_allclose(dets.boxes, ref_b, atol=2e-3)


def test_apply_deltas_matches_numpy():
    rng = np.random.default_rng(2)
    boxes = random_windows(rng, 50, 300, 400)
    d = rng.normal(0, 0.5, (50, 4))
    d[0, 2] = 20.0  # clamped log-scale
    np.testing.assert_allclose(apply_deltas(torch.from_numpy(boxes), torch.from_numpy(d)).numpy(),
                               apply_deltas_np(boxes, d), rtol=1e-12)

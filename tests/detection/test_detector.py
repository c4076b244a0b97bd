"""The detector: per-class NMS against a brute-force reference, model combination, and
detection on a real image (boxes inside the image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sppdet.boxes import box_iou
from sppdet.detector import DetectionParams, Detector, detect_dataset, nms_per_class, proposer_for
from sppdet.features.backbones import get_backbone
from sppdet.heads.model_dir import DetectorModel, load_model, save_model

CLASSES = ["a", "b", "c"]


def brute_force_nms(boxes, scores, params, hw):
    """Greedy NMS per class by explicit loops (the reference)."""
    out = []
    for c in range(scores.shape[1]):
        thr = params.score_threshold if params.class_thresholds is None else params.class_thresholds[c]
        cand = [(scores[i, c], i) for i in range(len(scores)) if scores[i, c] > thr]
        cand.sort(key=lambda t: -t[0])
        kept = []
        for s, i in cand:
            b = boxes[i, c].copy()
            b[[0, 2]] = np.clip(b[[0, 2]], 0, hw[1])
            b[[1, 3]] = np.clip(b[[1, 3]], 0, hw[0])
            if all(box_iou(b[None], k[None])[0, 0] <= params.nms_iou for _, k in kept):
                kept.append((s, b))
        out += [(s, c, tuple(b)) for s, b in kept]
    out.sort(key=lambda t: -t[0])
    return out[: params.max_per_image]


@pytest.mark.parametrize("seed,per_class", [(s, s % 2 == 1) for s in range(6)])
def test_nms_per_class_matches_brute_force(seed, per_class):
    rng = np.random.default_rng(seed)
    n = 60
    xy = rng.uniform(0, 80, (n, 2))
    base = np.concatenate([xy, xy + rng.uniform(10, 40, (n, 2))], 1)
    boxes = base[:, None, :] + rng.normal(0, 2, (n, 3, 4))
    scores = rng.normal(0, 1, (n, 3))
    params = DetectionParams(score_threshold=-0.5, nms_iou=0.3, max_per_image=25,
                             class_thresholds=(0.8, -2.0, 0.1) if per_class else None)
    b, s, l = nms_per_class(boxes, scores, params, (100, 110))
    ref = brute_force_nms(boxes, scores, params, (100, 110))
    assert len(s) == len(ref)
    np.testing.assert_allclose(s, [r[0] for r in ref])
    assert l.tolist() == [r[1] for r in ref]
    np.testing.assert_allclose(b, [r[2] for r in ref])


def test_nms_ties_broken_by_index():
    """Equal scores (windows that pool the same cells) keep the earlier window, whatever the
    sort; the brute-force reference sorts stably."""
    rng = np.random.default_rng(11)
    n = 400
    xy = rng.uniform(0, 80, (n, 2))
    base = np.concatenate([xy, xy + rng.uniform(10, 40, (n, 2))], 1)
    boxes = base[:, None, :] + rng.normal(0, 2, (n, 2, 4))
    scores = rng.integers(0, 4, (n, 2)).astype(np.float64)  # many ties
    params = DetectionParams(score_threshold=-0.5, nms_iou=0.3, max_per_image=1000)
    b, s, l = nms_per_class(boxes, scores, params, (100, 110))
    ref = brute_force_nms(boxes, scores, params, (100, 110))
    # Across classes the reference's order of equal scores is by class; compare per class.
    for c in (0, 1):
        want = [r[2] for r in ref if r[1] == c]
        np.testing.assert_allclose(b[l == c], want)


def random_model(dim: int, seed: int, scales=(224,)) -> DetectorModel:
    rng = np.random.default_rng(seed)
    backbone = get_backbone("mobilenet_v2", "random")
    config = {"head": "pool", "classes": CLASSES, "feature_scale": 1.0, "fc7_scale": None,
              **backbone.describe(), "scales": list(scales), "max_size": 1000,
              "levels": [1, 2, 3, 6], "proposals": {"method": "edgeboxes", "params": {}},
              "test": {"score_threshold": -1e9, "nms_iou": 0.3, "max_per_image": 50}}
    return DetectorModel(config, rng.normal(0, 0.01, (3, dim)).astype(np.float32),
                         rng.normal(0, 1, 3).astype(np.float32))


def test_detect_real_image_boxes_inside(voc2007_root, tmp_path):
    from sppdet.data import VOCDataset

    ds = VOCDataset(voc2007_root, split="train", limit=1)
    image = ds.load_image(ds.ids[0])
    model = random_model(96 * 50, 0)
    save_model(tmp_path / "m", model)
    detector = Detector([load_model(tmp_path / "m")], "cpu")
    dets = detector.detect(image, ds.ids[0])
    h, w = image.shape[:2]
    assert 0 < len(dets.scores) <= 50
    assert (dets.boxes[:, :2] >= 0).all() and (dets.boxes[:, 2] <= w).all() and (dets.boxes[:, 3] <= h).all()
    assert (dets.boxes[:, 2] > dets.boxes[:, 0]).all() and (dets.boxes[:, 3] > dets.boxes[:, 1]).all()
    assert np.all(np.diff(dets.scores) <= 0)
    # Same-class survivors overlap by at most the NMS IoU.
    for c in range(3):
        b = dets.boxes[dets.labels == c]
        iou = box_iou(b, b) - np.eye(len(b))
        assert (iou <= 0.3 + 1e-9).all()


def test_model_combination_is_nms_on_the_union():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    windows = np.array([[10, 10, 60, 60], [12, 12, 62, 62], [80, 20, 150, 110]], float)
    m1, m2 = random_model(96 * 50, 1), random_model(96 * 50, 2)
    params = DetectionParams(-1e9, 0.3, 100)
    combined = Detector([m1, m2], "cpu", params)
    maps = combined.conv_maps(image)
    both = combined.detect_windows(windows, maps, (120, 160))
    # Reference: each model's raw scored windows, then NMS of the union.
    boxes, scores = [], []
    for m in (m1, m2):
        pooled = next(iter(combined.extractors.values())).pool(next(iter(maps.values())), windows).numpy()
        scores.append(m.score(pooled))
        boxes.append(m.regress(pooled, windows, None))
    ref = nms_per_class(np.concatenate(boxes), np.concatenate(scores), params, (120, 160))
    np.testing.assert_allclose(both.scores, ref[1])
    assert len(combined.extractors) == 1  # same features: one conv pass for both models


def test_mismatched_classes_refused():
    from sppdet.errors import SppdetError

    m1, m2 = random_model(96 * 50, 1), random_model(96 * 50, 2)
    m2.config["classes"] = ["x", "y", "z"]
    with pytest.raises(SppdetError, match="share their classes"):
        Detector([m1, m2], "cpu")


def test_proposer_for_recorded_parameters():
    propose = proposer_for({"method": "edgeboxes", "params": {"max_boxes": 50, "min_side": 8.0,
                                                             "edges": "sobel-canny-fallback"}})
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (100, 120, 3), dtype=np.uint8)
    boxes = propose(image)
    assert boxes.shape[1] == 4 and len(boxes) <= 50


def test_detect_cli_json_draw_and_bad_inputs(tmp_path):
    import json
    import subprocess
    import sys

    import cv2

    save_model(tmp_path / "m", random_model(96 * 50, 0))
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "ok.jpg"), rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    cmd = [sys.executable, "-m", "sppdet", "detect", str(tmp_path / "ok.jpg"), str(tmp_path / "bad.jpg"),
           "--model", str(tmp_path / "m"), "--json", str(tmp_path / "d.json"),
           "--draw", str(tmp_path / "drawn"), "--score-thresh", "-1e9", "--max-per-image", "5"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "bad.jpg: cannot decode image" in result.stderr and "Traceback" not in result.stderr
    out = json.loads((tmp_path / "d.json").read_text())
    (entry,) = out["images"]
    assert 0 < len(entry["detections"]) <= 5
    for d in entry["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 < x2 <= 120 and 0 <= y1 < y2 <= 90 and d["class"] in CLASSES
    assert out["failed"][0]["image"].endswith("bad.jpg")
    assert cv2.imread(str(tmp_path / "drawn" / "ok.jpg")).shape == (90, 120, 3)
    missing = subprocess.run([sys.executable, "-m", "sppdet", "detect", str(tmp_path / "ok.jpg"),
                              "--model", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 1 and "model directory not found" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_windows_on_the_same_cells_are_scored_once_with_the_same_detections():
    """Windows that pool the same cells (duplicates, or boxes a few pixels apart on a
    stride-16 map) are pooled and scored once: same detections as scoring every window."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, (200, 260, 3), dtype=np.uint8)
    xy = rng.uniform(0, 150, (120, 2))
    windows = np.concatenate([xy, xy + rng.uniform(20, 100, (120, 2))], 1)
    windows = np.concatenate([windows, windows[:60], windows[:60] + rng.uniform(-2, 2, (60, 4))])
    model = random_model(96 * 50, 3)
    params = DetectionParams(-1e9, 0.3, 1000)
    detector = Detector([model], "cpu", params)
    maps = detector.conv_maps(image)
    fmap, extractor = next(iter(maps.values())), next(iter(detector.extractors.values()))
    pooled, rows = model.pool_distinct(fmap, windows, extractor)
    assert len(pooled) < len(windows) - 60  # the duplicates were pooled once
    every = extractor.pool(fmap, windows)
    torch.testing.assert_close(pooled[rows], every, rtol=0, atol=0)
    got = detector.detect_windows(windows, maps, (200, 260))
    scores = model.score(every.numpy())
    ref = nms_per_class(model.regress(every.numpy(), windows, None), scores, params, (200, 260))
    np.testing.assert_allclose(got.scores, ref[1], rtol=1e-5)
    np.testing.assert_allclose(got.boxes, ref[0], rtol=1e-5)
    assert got.labels.tolist() == ref[2].tolist()

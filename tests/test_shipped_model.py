"""The models shipped in the package load, match the code's format, and detect: the default
(conv fine-tuned through SPP, softmax + box deltas) and the paper's recipe (fc7 SVMs)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sppdet.heads.model_dir import FORMAT_VERSION, load_model
from sppdet.models import DEFAULT_MODEL, SVM_MODEL, shipped_model_dir


def test_shipped_model_loads_and_matches_format():
    path = shipped_model_dir()
    model = load_model(path)
    assert model.config["format_version"] == FORMAT_VERSION
    assert model.config["head"] == "softmax" and model.conv_top is not None and len(model.classes) == 20
    assert model.config["backbone"] == "mobilenet_v2" and model.config["bbox_regression"]
    assert not [f.name for f in path.iterdir() if f.suffix in (".pt", ".pth")]  # no pickled files
    assert sum(f.stat().st_size for f in path.iterdir()) < 16 * 2**20  # the limit (int8 fc, float16 conv top)


def test_shipped_svm_model_loads_and_matches_format():
    path = shipped_model_dir(SVM_MODEL)
    model = load_model(path)
    assert model.config["format_version"] == FORMAT_VERSION
    assert len(model.classes) == 20 and model.svm_W.shape == (20, model.config["svm_dim"])
    assert model.config["backbone"] == "mobilenet_v2" and model.bbox is not None
    assert not [f.name for f in path.iterdir() if f.suffix in (".pt", ".pth")]  # no pickled files
    assert sum(f.stat().st_size for f in path.iterdir()) < 5 * 2**20  # a few MB: heads only (int8, low-rank fc6)


@pytest.mark.parametrize("name", [DEFAULT_MODEL, SVM_MODEL])
@pytest.mark.parametrize("sample, expected", [("astronaut", "person"), ("chelsea", "cat"),
                                              ("stereo_motorcycle", "motorbike")])
def test_shipped_model_detects_on_a_sample_photo(torch_home, name, sample, expected):
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (the demo extra) not installed")
    import cv2

    from sppdet.detector import DetectionParams, Detector, load_models

    models = load_models([shipped_model_dir(name)])
    detector = Detector(models, "cpu", DetectionParams(score_threshold=-1.0, max_per_image=20))
    rgb = getattr(skimage_data, sample)()
    rgb = rgb[0] if isinstance(rgb, tuple) else rgb  # stereo_motorcycle: (left, right, disparity)
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    dets = detector.detect(image, sample)
    h, w = image.shape[:2]
    assert len(dets.scores) > 0
    assert (dets.boxes[:, :2] >= 0).all() and (dets.boxes[:, 2] <= w).all() and (dets.boxes[:, 3] <= h).all()
    top = [detector.classes[int(k)] for k in dets.labels[np.argsort(-dets.scores)[:3]]]
    assert expected in top, top


@pytest.mark.parametrize("name, low, high", [(DEFAULT_MODEL, 0.001, 1.0),  # probabilities
                                             (SVM_MODEL, -1.5, 2.0)])  # SVM scores
def test_shipped_model_has_display_thresholds_for_every_class(name, low, high):
    model = load_model(shipped_model_dir(name))
    thresholds = model.config["test"]["display_thresholds"]
    assert set(thresholds) == set(model.classes)
    # above the evaluation threshold (the model's score_threshold), below the top score
    assert model.config["test"]["score_threshold"] == low or name == SVM_MODEL
    assert all(low < t < high for t in thresholds.values())

"""The Python front door: ``sppdet.Detector.load`` and ``det(image)`` on every input type,
the result object, and the lazy top-level package."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import sppdet
from sppdet.errors import ArgumentError, DataError, SppdetError
from sppdet.heads.model_dir import save_model

from tests.detection.test_detector import CLASSES, random_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = random_model(96 * 50, 0)
    model.config["proposals"] = {"method": "edgeboxes", "params": {"max_boxes": 60, "min_side": 8.0}}
    return save_model(tmp_path_factory.mktemp("api") / "m", model)


@pytest.fixture(scope="module")
def det(model_dir):
    return sppdet.Detector.load(model_dir, "cpu", score_threshold=-1e9, max_per_image=20)


@pytest.fixture(scope="module")
def rgb():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 80, (96, 128, 3), dtype=np.uint8)
    image[20:70, 30:100] = (230, 60, 20)  # a red block (RGB): the channel order matters
    return image


def same(a, b):
    np.testing.assert_allclose(a.boxes, b.boxes)
    np.testing.assert_allclose(a.scores, b.scores)
    assert a.labels.tolist() == b.labels.tolist()


def test_every_input_type_gives_the_detection_of_the_same_pixels(det, rgb, tmp_path):
    import cv2
    from PIL import Image

    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    reference = det.detect(bgr)  # the BGR interface the class always had
    assert len(reference) > 0
    from_rgb = det(rgb)  # default colour order: RGB
    same(from_rgb, reference)
    same(det(bgr, color="bgr"), reference)
    same(det(Image.fromarray(rgb)), reference)
    same(det(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])), reference)  # RGBA: alpha dropped
    cv2.imwrite(str(tmp_path / "x.png"), bgr)  # lossless, so the file holds the same pixels
    from_file = det(tmp_path / "x.png")
    same(from_file, reference)
    assert det(str(tmp_path / "x.png")).source == str(tmp_path / "x.png")
    assert from_file.image_hw == (96, 128) and from_rgb.source == ""
    # The wrong order really is another image: the scores change.
    swapped = det(rgb, color="bgr")
    assert len(swapped) != len(reference) or not np.allclose(swapped.scores, reference.scores)


def test_grey_array_is_the_grey_colour_image(det, rgb):
    grey = rgb[:, :, 1].copy()
    same(det(grey), det(np.dstack([grey] * 3)))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((10, 10, 3), np.float32), "dtype float32"),
    (np.zeros((10, 10, 2), np.uint8), "shape"),
    (np.zeros((0, 10, 3), np.uint8), "no pixels"),
    ([[1, 2], [3, 4]], "cannot detect in a list"),
    ("/nonexistent/photo.jpg", "photo.jpg: image file missing"),
])
def test_bad_inputs_are_clear_errors(det, bad, message):
    with pytest.raises(DataError, match=message):
        det(bad)


def test_bad_colour_order_is_an_argument_error(det, rgb):
    with pytest.raises(ArgumentError, match="color must be one of"):
        det(rgb, color="rgba")
    with pytest.raises(ValueError):  # an ArgumentError is a ValueError too
        det(rgb, color="hsv")


def test_result_object(det, rgb):
    result = det(rgb)
    n = len(result)
    assert result.boxes.shape == (n, 4) and result.scores.shape == (n,) and result.labels.shape == (n,)
    assert result.boxes.dtype == np.float64 and result.labels.dtype == np.int64
    assert np.all(np.diff(result.scores) <= 0)  # best first
    assert result.classes == tuple(CLASSES)
    assert result.class_names == [CLASSES[k] for k in result.labels]
    items = list(result)
    assert [d.class_name for d in items] == result.class_names
    np.testing.assert_allclose(items[0].box, result.boxes[0])
    assert items[0].score == result.scores[0] and items[0].label == result.labels[0]
    d = result.to_dict()
    assert (d["width"], d["height"]) == (128, 96) and len(d["detections"]) == n
    assert d["detections"][0] == {"class": result.class_names[0], "score": round(float(result.scores[0]), 4),
                                  "box": [round(float(v), 2) for v in result.boxes[0]]}
    assert f"{n} detections" in repr(result)


def test_load_applies_settings_and_display_thresholds(model_dir, rgb):
    from sppdet.heads.model_dir import update_test_settings

    few = sppdet.Detector.load(model_dir, "cpu", score_threshold=-1e9, max_per_image=3)
    assert len(few(rgb)) == 3 and few.params.max_per_image == 3
    # Without score_threshold: the model's per-class display thresholds, as `sppdet detect`.
    update_test_settings(model_dir, {"display_thresholds": {"a": 5.0, "b": -1e9}, "display_threshold": 1e9})
    shown = sppdet.Detector.load(model_dir, "cpu", max_per_image=100)
    assert shown.params.class_thresholds == (5.0, -1e9, 1e9)
    result = shown(rgb)
    everything = few.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
    assert set(result.class_names) <= {"a", "b"}
    assert len(result) > 0 and (result.scores[result.labels == 0] > 5.0).all()
    assert len(everything) == 3
    with pytest.raises(SppdetError, match="model directory not found"):
        sppdet.Detector.load(model_dir.parent / "nowhere")


def test_load_combines_several_models(model_dir, rgb, tmp_path):
    other = save_model(tmp_path / "m2", random_model(96 * 50, 5))
    both = sppdet.Detector.load([model_dir, other], "cpu", score_threshold=-1e9)
    assert len(both.models) == 2 and len(both.extractors) == 1
    assert len(both(rgb)) > 0


def test_import_sppdet_is_light_and_exports_the_api():
    code = ("import sys, sppdet; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert set(sppdet.__all__) <= set(dir(sppdet)); "
            "from sppdet import Detector, DetectionResult; "
            "import sppdet.detector as d; assert Detector is d.Detector; "
            "[getattr(sppdet, name) for name in sppdet.__all__]; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        sppdet.nothing  # noqa: B018

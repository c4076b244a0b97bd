"""The proposal methods on synthetic images with known objects, and the method registry."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from proposals import CommonOptions, ProposalError, ProposalMethod, create_method
from proposals.base import _REGISTRY, available_methods, register
from proposals.edge_boxes import edgeboxes_rects_to_xyxy
from proposals.edges import EDGE_MODEL_ENV, SobelCannyEdges, orientation_from_edges
from tests.proposals._synthetic import brute_iou, synthetic_image

METHODS = ["ss-fast", "ss-quality", "edgeboxes"]


def _check_valid(p, width: int, height: int, common: CommonOptions) -> None:
    assert p.boxes.dtype == np.float32 and p.boxes.shape == (len(p), 4)
    assert p.scores.dtype == np.float32 and p.scores.shape == (len(p),)
    assert 0 < len(p) <= common.max_boxes
    b = p.boxes
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 2] <= width).all() and (b[:, 3] <= height).all()
    assert (b[:, 2] - b[:, 0] >= common.min_side).all() and (b[:, 3] - b[:, 1] >= common.min_side).all()
    assert len(np.unique(np.round(b), axis=0)) == len(b)
    assert (np.diff(p.scores) <= 0).all()


@pytest.mark.parametrize("name", METHODS)
def test_method_output_is_valid_and_finds_objects(name):
    img, gt = synthetic_image()
    common = CommonOptions(min_side=4)
    p = create_method(name, common)(img)
    _check_valid(p, 160, 120, common)
    best = brute_iou(gt, p.boxes.astype(np.float64)).max(axis=1)
    # Selective search recovers flat rectangles exactly; EdgeBoxes' windows are coarser.
    assert (best >= (0.99 if name.startswith("ss") else 0.7)).all(), best


@pytest.mark.parametrize("name", METHODS)
def test_method_is_deterministic(name):
    img, _ = synthetic_image(seed=3)
    a = create_method(name)(img)
    cv2.setNumThreads(2)
    try:
        b = create_method(name)(img)
    finally:
        cv2.setNumThreads(1)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("name", ["ss-fast", "edgeboxes"])
def test_max_boxes_is_a_prefix_of_the_full_list(name):
    img, _ = synthetic_image(seed=5)
    full = create_method(name, CommonOptions(min_side=0))(img)
    top = create_method(name, CommonOptions(min_side=0, max_boxes=7))(img)
    assert len(full) > 7
    np.testing.assert_array_equal(top.boxes, full.boxes[:7])


def test_downscaled_boxes_come_back_in_original_pixels():
    # The same scene at twice the size, proposed on a half-size copy.
    small, gt = synthetic_image()
    big = cv2.resize(small, (320, 240), interpolation=cv2.INTER_NEAREST)
    common = CommonOptions(min_side=4, max_side=160)
    p = create_method("ss-fast", common)(big)
    _check_valid(p, 320, 240, common)
    assert p.boxes[:, 2].max() > 160  # boxes span the original image, not the small copy
    best = brute_iou(gt * 2, p.boxes.astype(np.float64)).max(axis=1)
    assert (best >= 0.95).all(), best


def test_edgeboxes_rect_conversion_hand_computed():
    # OpenCV returns Rect(x0 + 1, y0 + 1, w, h) for a box over 0-based pixels x0..x0+w.
    out = edgeboxes_rects_to_xyxy(np.array([[1, 1, 9, 4], [21, 31, 49, 59]]))
    np.testing.assert_array_equal(out, [[0, 0, 10, 5], [20, 30, 70, 90]])


def test_grayscale_accepted_and_bad_images_rejected():
    img, _ = synthetic_image()
    method = create_method("ss-fast")
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(method(gray).boxes, method(np.repeat(gray[:, :, None], 3, 2)).boxes)
    with pytest.raises(ProposalError, match="uint8"):
        method(img.astype(np.float32))
    with pytest.raises(ProposalError, match="HxWx3"):
        method(np.zeros((10, 10, 4), np.uint8))


def test_params_and_bad_options():
    m = create_method("ss-quality", CommonOptions(max_boxes=500))
    assert m.name == "ss-quality"
    assert m.params["max_boxes"] == 500 and m.params["method"] == "ss-quality"
    with pytest.raises(ProposalError, match="unknown proposal method 'nope'"):
        create_method("nope")
    with pytest.raises(ProposalError, match="max_boxes"):
        CommonOptions(max_boxes=0)
    assert {"ss-fast", "ss-quality", "edgeboxes"} <= set(available_methods())


def test_edgeboxes_records_fallback_and_rejects_missing_model(tmp_path, monkeypatch):
    monkeypatch.delenv(EDGE_MODEL_ENV, raising=False)
    assert create_method("edgeboxes").params["edges"] == "sobel-canny-fallback"
    missing = tmp_path / "model.yml.gz"
    with pytest.raises(ProposalError, match="structured edge model not found"):
        create_method("edgeboxes", edge_model=missing)
    monkeypatch.setenv(EDGE_MODEL_ENV, str(missing))
    with pytest.raises(ProposalError, match=str(missing)):
        create_method("edgeboxes")
    missing.write_bytes(b"not a model")
    with pytest.raises(ProposalError, match="cannot load structured edge model"):
        create_method("edgeboxes")


def test_fallback_edges_are_thin():
    img = np.zeros((60, 80, 3), np.uint8)
    img[:, 40:] = 255  # one vertical step edge
    edges, _ = SobelCannyEdges()(img)
    assert edges.dtype == np.float32 and 0 <= edges.min() and edges.max() <= 1
    on = edges > 0
    assert 1 <= on[10:50].sum(axis=1).min() and on[10:50].sum(axis=1).max() <= 2
    assert set(np.nonzero(on[10:50])[1]) <= {38, 39, 40, 41}


@pytest.mark.parametrize("angle", [0, 30, 45, 90, 120, 150])
def test_orientation_is_the_edge_normal(angle):
    # A straight edge whose normal points at `angle` degrees (image x right, y down).
    theta = np.deg2rad(angle)
    yy, xx = np.mgrid[0:81, 0:81].astype(float) - 40
    dist = xx * np.cos(theta) + yy * np.sin(theta)
    edges = np.exp(-dist**2 / 2).astype(np.float32)  # a thin ridge through the centre
    orient = orientation_from_edges(edges)
    on_ridge = (np.abs(dist) < 0.5) & (np.abs(xx) < 20) & (np.abs(yy) < 20)
    err = np.abs((orient[on_ridge] - theta + np.pi / 2) % np.pi - np.pi / 2)
    assert err.max() < 0.02, (angle, err.max())


def test_a_new_method_is_one_small_class():
    @register("test-whole-image")
    class WholeImage(ProposalMethod):
        name = "test-whole-image"

        def method_params(self):
            return {"method": self.name}

        def _propose(self, image_bgr):
            h, w = image_bgr.shape[:2]
            return np.array([[0, 0, w, h], [-5, -5, w + 5, h + 5]], float), np.array([2.0, 1.0])

    try:
        p = create_method("test-whole-image")(np.zeros((30, 40, 3), np.uint8))
        np.testing.assert_array_equal(p.boxes, [[0, 0, 40, 30]])  # clipped copy deduped
    finally:
        _REGISTRY.pop("test-whole-image")


def test_package_imports_neither_torch_nor_sppdet():
    import subprocess
    import sys

    code = ("import sys, proposals; proposals.available_methods(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sppdet')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

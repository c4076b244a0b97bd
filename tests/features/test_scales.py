"""Image pyramid sizes, scale selection (area nearest 224 x 224) and input normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sppdet.features.pyramid import (DEFAULT_SCALES, nearest_scale, resized_shape, scale_factors,
                                     select_scales, to_input_tensor)


@pytest.mark.parametrize("hw, scale, max_size, expected", [
    ((375, 500), 688, 2000, (688, 917)),  # 500 * 688 / 375 = 917.3
    ((375, 500), 1200, 2000, (1200, 1600)),
    ((375, 500), 1200, 1000, (750, 1000)),  # longer side capped: factor 2
    ((500, 375), 480, 2000, (640, 480)),  # portrait keeps its aspect ratio
    ((100, 100), 688, 2000, (688, 688)),
])
def test_resized_shape(hw, scale, max_size, expected):
    assert resized_shape(hw, scale, max_size) == expected


def test_scale_factors_are_the_actual_ones():
    f = scale_factors((375, 500), (688,), 2000)
    np.testing.assert_allclose(f, [[917 / 500, 688 / 375]])


def test_select_scales_hand_computed():
    # 375 x 500 image, scales 480 (f = 1.28) and 688 (f = 1.8347, width 917)
    boxes = np.array([[0, 0, 100, 100],    # 10,000 px: 16,384 at 480, ~33,642 at 688 -> 688
                      [0, 0, 200, 200],    # 40,000 px: 65,536 at 480 (nearer 50,176) -> 480
                      [10, 10, 13, 13]])   # tiny: the largest scale
    assert select_scales(boxes, (375, 500), (480, 688)).tolist() == [1, 0, 1]


def test_select_scales_brute_force_five_scales():
    rng = np.random.default_rng(0)
    hw = (333, 500)
    xy = rng.uniform(0, 300, (500, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(2, 200, (500, 2))], axis=1)
    got = select_scales(boxes, hw, DEFAULT_SCALES)
    for box, g in zip(boxes, got):
        costs = []
        for s in DEFAULT_SCALES:
            nh, nw = resized_shape(hw, s, 2000)
            w = (box[2] - box[0]) * nw / hw[1]
            h = (box[3] - box[1]) * nh / hw[0]
            costs.append(abs(w * h - 224 * 224))
        assert g == int(np.argmin(costs))
    assert len(set(got.tolist())) == 5  # every scale gets some windows


def test_nearest_scale_uses_both_axes():
    boxes = np.array([[0, 0, 224, 224]])
    assert nearest_scale(boxes, np.array([[0.5, 0.5], [1.0, 1.0], [2.0, 2.0]])).tolist() == [1]
    assert nearest_scale(boxes, np.array([[2.0, 0.5], [1.5, 1.5]])).tolist() == [0]


def test_input_tensor_is_rgb_and_imagenet_normalised():
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    image[..., 0] = 255  # pure blue in BGR
    x = to_input_tensor(image, 60, 2000)
    assert x.shape == (1, 3, 60, 80) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, :, 5, 5], torch.tensor([-0.485 / 0.229, -0.456 / 0.224, 0.594 / 0.225]))


def test_input_tensor_equals_the_formula_on_a_real_sized_image():
    """((RGB / 255) - mean) / std of the resized image, in that order of operations, to the
    bit, in the channels-last layout the backbone gets."""
    import cv2

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (75, 100, 3), dtype=np.uint8)
    x = to_input_tensor(image, 150, 2000)
    resized = cv2.resize(image, (200, 150), interpolation=cv2.INTER_LINEAR)
    rgb = torch.from_numpy(resized[:, :, [2, 1, 0]].astype(np.float32)).permute(2, 0, 1)[None]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.equal(x, ((rgb / 255.0) - mean) / std)
    assert x.is_contiguous(memory_format=torch.channels_last)

"""The detection containers: validation and regrouping per class."""

from __future__ import annotations

import numpy as np
import pytest

from sppdet.detections import ClassDetections, Detections, group_by_class


def test_detections_validate_shapes():
    d = Detections("a", [[0, 0, 1, 1]], [0.5], [1])
    assert d.boxes.dtype == np.float64 and d.labels.dtype == np.int64 and len(d) == 1
    assert len(Detections.empty("a")) == 0
    with pytest.raises(ValueError, match="shape"):
        Detections("a", [[0, 0, 1]], [0.5], [1])
    with pytest.raises(ValueError, match="scores"):
        Detections("a", [[0, 0, 1, 1]], [0.5, 0.2], [1])
    with pytest.raises(ValueError, match="integers"):
        Detections("a", [[0, 0, 1, 1]], [0.5], [1.5])
    with pytest.raises(ValueError, match="image_ids"):
        ClassDetections(["a", "b"], [0.5], [[0, 0, 1, 1]])


def test_group_by_class_keeps_every_box_once_in_image_order():
    per_image = [
        Detections("a", [[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]], [0.1, 0.2, 0.3], [0, 2, 0]),
        Detections.empty("b"),
        Detections("c", [[5, 5, 6, 6]], [0.9], [0]),
    ]
    g = group_by_class(per_image, ["cat", "dog", "bird"])
    assert list(g) == ["cat", "dog", "bird"]
    assert g["cat"].image_ids.tolist() == ["a", "a", "c"]
    assert g["cat"].scores.tolist() == [0.1, 0.3, 0.9]
    assert g["cat"].boxes.tolist() == [[0, 0, 1, 1], [2, 2, 3, 3], [5, 5, 6, 6]]
    assert len(g["dog"]) == 0 and g["bird"].image_ids.tolist() == ["a"]
    with pytest.raises(ValueError, match="outside the 3 classes"):
        group_by_class([Detections("a", [[0, 0, 1, 1]], [0.1], [3])], ["cat", "dog", "bird"])

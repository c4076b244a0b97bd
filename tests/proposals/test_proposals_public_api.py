"""The public helpers other packages use: rebuilding a method from recorded parameters,
OpenCV's thread count around a block, and the one copy of atomic writes and box helpers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from proposals import CommonOptions, ProposalError, create_method, create_method_from_params, method_options
from proposals.threads import opencv_threads


def test_method_from_recorded_params_equals_the_original():
    original = create_method("edgeboxes", CommonOptions(max_boxes=50, min_side=8.0), alpha=0.6)
    recorded = {**original.params, "order": "a description, not an option"}
    rebuilt = create_method_from_params("edgeboxes", recorded)
    assert rebuilt.params == original.params
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rebuilt(image).boxes, original(image).boxes)
    assert "alpha" in method_options("edgeboxes") and "common" not in method_options("edgeboxes")
    with pytest.raises(ProposalError, match="unknown proposal method 'nope'"):
        create_method_from_params("nope", {})


def test_opencv_threads_restored_after_the_block_and_after_an_error():
    before = cv2.getNumThreads()
    target = 1 if before != 1 else 2
    with opencv_threads(target):
        assert cv2.getNumThreads() == target
    assert cv2.getNumThreads() == before
    with pytest.raises(RuntimeError):
        with opencv_threads(target):
            raise RuntimeError("boom")
    assert cv2.getNumThreads() == before


def test_sppdet_uses_the_one_copy_of_atomic_writes_and_box_helpers(tmp_path):
    import proposals.atomic
    import proposals.boxes
    import sppdet.boxes
    import sppdet.fileio

    assert sppdet.fileio.atomic_path is proposals.atomic.atomic_path
    assert sppdet.fileio.save_npz is proposals.atomic.save_npz and sppdet.fileio.save_json is proposals.atomic.save_json
    assert sppdet.boxes.clip_boxes is proposals.boxes.clip_boxes
    assert sppdet.boxes.xywh_to_xyxy is proposals.boxes.xywh_to_xyxy
    with pytest.raises(ValueError), sppdet.fileio.atomic_path(tmp_path / "x.json") as tmp:
        tmp.write_text("half")
        raise ValueError("interrupted")
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind

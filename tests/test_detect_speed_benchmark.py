"""benchmarks/detect_speed.py: its configurations, and one of them run in its own process."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from benchmarks.detect_speed import configs, main, run_config_isolated, warmup_images


def _args(**kw) -> argparse.Namespace:
    base = dict(voc=None, split="train", images=2, warmup=1, device="cpu", model=None, threads=[1, 2],
                presets=["model", "fast"], no_torchvision=False)
    return argparse.Namespace(**{**base, **kw})


def test_configurations_cover_every_thread_count_preset_and_mode():
    got = configs(_args())
    assert got[:3] == [{"threads": 1, "preset": "model", "overlap": False},
                       {"threads": 1, "preset": "fast", "overlap": False},
                       {"threads": 1, "torchvision": "fasterrcnn_mobilenet_v3_large_fpn"}]
    two = [c for c in got if c["threads"] == 2 and "preset" in c]
    assert [(c["preset"], c["overlap"]) for c in two] == [("model", False), ("model", True),
                                                          ("fast", False), ("fast", True)]
    assert not any("torchvision" in c for c in configs(_args(no_torchvision=True)))


def test_a_configuration_runs_in_its_own_process_and_reports_its_stages(make_voc, torch_home):
    """The child process times the shipped model's fast preset on the given images and
    returns its row (the parent has loaded no image and no model)."""
    voc = make_voc(n_images=3)
    row = run_config_isolated({"threads": 1, "preset": "fast", "overlap": False}, _args(voc=voc))
    assert (row["threads"], row["preset"], row["mode"], row["torch_threads"]) == (1, "fast", "serial", 1)
    assert row["conv_median"] > 0 and row["pooling_median"] > 0
    assert row["total_median"] >= row["conv_median"] + row["pooling_median"]
    # Each image's pooling share; with three images the median is one image's own ratio.
    assert 0 < row["pooling_over_conv_median"] < 1


def test_warm_up_covers_every_image_size_once():
    images = [(str(i), np.zeros(shape, np.uint8)) for i, shape in enumerate(
        [(5, 7, 3), (5, 7, 3), (7, 5, 3), (5, 7, 3), (9, 9, 3), (7, 5, 3)])]
    assert [i for i, _ in warmup_images(images, 2)] == ["0", "1", "2", "4"]
    assert [i for i, _ in warmup_images(images, 0)] == ["0", "2", "4"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: --device cuda is valid here")
def test_a_device_this_machine_lacks_is_refused_with_a_message(tmp_path):
    out = tmp_path / "speed.json"
    with pytest.raises(SystemExit) as stop:
        main(["--device", "cuda", "--voc", str(tmp_path), "--out", str(out)])
    assert "CUDA is not available here" in str(stop.value.code)
    assert not out.exists()

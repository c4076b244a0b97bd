"""Errors a user can cause are SppdetError subclasses naming the file or the reason; the
argument errors of library functions are ValueErrors too."""

from __future__ import annotations

import pytest

from sppdet.errors import ArgumentError, ConfigMismatchError, DataError, SppdetError


def test_argument_error_is_both():
    assert issubclass(ArgumentError, SppdetError) and issubclass(ArgumentError, ValueError)


def test_split_count_and_training_without_data():
    from sppdet.data.splits import random_split
    from sppdet.heads.train import train_heads

    with pytest.raises(ArgumentError, match="val_count must be between 1 and 2"):
        random_split(["a", "b", "c"], 3)
    with pytest.raises(DataError, match="no training images"):
        train_heads([], None, ["a"], progress=False)


def test_evaluating_a_model_on_other_classes_is_refused(make_voc, tmp_path):
    from sppdet.data import VOCDataset
    from sppdet.detector import detect_dataset
    from sppdet.heads.model_dir import save_model
    from tests.detection.test_detector import random_model

    root = make_voc(n_images=2, classes=("cat", "dog"))
    model = save_model(tmp_path / "m", random_model(96 * 50, 0))  # classes a, b, c
    with pytest.raises(ConfigMismatchError, match=r"m: the model's classes \['a', 'b', 'c'\] differ"):
        next(detect_dataset(model, VOCDataset(root, split="train", classes=("cat", "dog"))))


def test_cli_prints_a_proposal_error_as_one_line(tmp_path, capsys):
    from sppdet.cli import main
    from tests.detection.test_detector import random_model
    from sppdet.heads.model_dir import save_model
    import cv2
    import numpy as np

    save_model(tmp_path / "m", random_model(96 * 50, 0))
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(SystemExit) as e:
        main(["detect", str(tmp_path / "x.png"), "--model", str(tmp_path / "m"), "--proposals", "nope",
              "--device", "cpu"])
    assert e.value.code == 1
    assert "unknown proposal method 'nope'" in capsys.readouterr().err

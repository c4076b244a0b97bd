"""The head registry (``heads.kinds``): the model directory, the scorer and train-svm look
kinds up there, and an unknown head is a clear error naming the file and the value."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sppdet.errors import ArgumentError, ModelFormatError
from sppdet.heads.kinds import FC_HEADS, HEADS, SVM_HEADS, head_spec
from sppdet.heads.model_dir import load_model, save_model
from tests.heads.test_heads_model_dir import make_model


def test_registry_describes_each_kind():
    assert list(HEADS) == ["pool", "fc7", "softmax"]
    assert SVM_HEADS == ("pool", "fc7") and FC_HEADS == ("fc7", "softmax")
    assert HEADS["pool"].svm_input == "pool" and not HEADS["pool"].fc_layers
    assert HEADS["fc7"].svm_input == "fc7" and HEADS["fc7"].svms and not HEADS["fc7"].classifier
    assert HEADS["softmax"].classifier and not HEADS["softmax"].svms
    assert head_spec("fc7", "x") is HEADS["fc7"]


@pytest.mark.parametrize("value", ["conv", None, 3, ["pool"]])
def test_unknown_head_names_the_config_file_and_the_value(tmp_path, value):
    path = save_model(tmp_path / "m", make_model("pool"))
    cfg = json.loads((path / "config.json").read_text())
    cfg["head"] = value
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError) as e:
        load_model(path)
    message = str(e.value)
    assert str(path / "config.json") in message and f"unknown head {value!r}" in message
    assert "pool, fc7, softmax" in message


def test_writing_an_unknown_head_is_an_argument_error(tmp_path):
    model = make_model("pool")
    model.config["head"] = "nope"
    with pytest.raises(ArgumentError, match="unknown head 'nope'"):
        save_model(tmp_path / "m", model)
    assert not (tmp_path / "m" / "config.json").exists()


def test_train_svm_refuses_a_head_it_does_not_train(tmp_path):
    import sppdet

    with pytest.raises(ArgumentError, match="head must be one of pool, fc7, got 'softmax'"):
        sppdet.train_svm(object(), tmp_path, tmp_path, tmp_path / "m", head="softmax")


@pytest.mark.parametrize("head", ["pool", "fc7"])
def test_scores_follow_the_registered_kind(head):
    """The scorer's formula for each SVM kind, written out: pool scores the scaled pooled
    features; fc7 scores the scaled fc7 outputs of the fc layers."""
    model = make_model(head)
    x = np.random.default_rng(2).uniform(0, 3, (7, 20)).astype(np.float32)
    s = np.float64(model.feature_scale)
    if head == "pool":
        features = x * s
    else:
        W6, b6 = (t.detach().double().numpy() for t in (model.fc.fc6.weight, model.fc.fc6.bias))
        W7, b7 = (t.detach().double().numpy() for t in (model.fc.fc7.weight, model.fc.fc7.bias))
        h = np.maximum(np.maximum(x * s @ W6.T + b6, 0) @ W7.T + b7, 0)
        features = h * model.config["fc7_scale"]
    expected = features @ model.svm_W.T.astype(np.float64) + model.svm_b
    np.testing.assert_allclose(model.score(x), expected, rtol=1e-4, atol=1e-4)

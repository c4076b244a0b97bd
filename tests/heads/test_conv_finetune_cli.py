"""`sppdet finetune --conv-top` end to end: MobileNetV2 (ImageNet weights) block-13 maps
cached by `sppdet extract`, blocks 14-17 fine-tuned with new fc layers, then `eval`,
`train-svm --head fc7` on the fine-tuned network, `pack`, and a refused cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sppdet.heads.model_dir import load_model
from tests.conftest import run
from tests.heads.conftest import CLASSES, write_rect_voc


@pytest.fixture(scope="module")
def conv_caches(tmp_path_factory):
    import os

    from tests.conftest import WEIGHTS

    if not (WEIGHTS / "hub" / "checkpoints").is_dir():
        pytest.skip(f"MobileNetV2 ImageNet weights not found under {WEIGHTS} (../shared is absent)")
    os.environ["TORCH_HOME"] = str(WEIGHTS)
    tmp = tmp_path_factory.mktemp("conv_cli")
    _, data = write_rect_voc(tmp, 8)
    for name, weights in (("feats", []), ("feats_random", ["--weights", "random"])):
        assert run("extract", *data, "--proposals", str(tmp / "props"), "--out", str(tmp / name),
                   "--backbone", "mobilenet_v2", *weights, "--scales", "160", "--scales", "224",
                   "--device", "cpu") == 0
    return tmp, data


def test_conv_finetune_eval_svms_pack_and_refused_cache(conv_caches, capsys):
    tmp, data = conv_caches
    caches = ["--features", str(tmp / "feats"), "--proposals", str(tmp / "props")]
    model_dir = tmp / "conv"
    assert run("finetune", *data, *caches, "--out", str(model_dir), "--conv-top", "18", "--hidden",
               "16", "--iterations", "10", "--rois-per-image", "16", "--checkpoint-every", "4",
               "--quiet", "--device", "cpu") == 0
    assert not (model_dir / "conv_finetune.ckpt.npz").exists()
    model = load_model(model_dir)
    assert model.head == "softmax" and model.conv_top is not None
    assert model.conv_top.config.end == 18 and model.conv_top.stride == 32
    assert model.config["scales"] == [160, 224] and model.config["weights"] == "IMAGENET1K_V1"
    assert not list(model_dir.glob("*.pt"))  # nothing pickled
    capsys.readouterr()

    assert run("eval", *data, "--split", "train", "--model", str(model_dir), *caches, "--device", "cpu", "--no-coco",
               "--json", str(tmp / "conv.json")) == 0
    metrics = json.loads((tmp / "conv.json").read_text())
    assert set(metrics["AP"]) == set(CLASSES) and 0.0 <= metrics["mAP"] <= 1.0

    # The paper's SVMs on the fine-tuned network's fc7, pooled on its conv top.
    svm_dir = tmp / "conv_svm"
    assert run("train-svm", *data, *caches, "--out", str(svm_dir), "--head", "fc7", "--finetuned",
               str(model_dir), "--norm-images", "4", "--retrain-every", "50", "--quiet",
               "--device", "cpu") == 0
    svm = load_model(svm_dir)
    assert svm.head == "fc7" and svm.conv_top is not None and svm.svm_W.shape == (2, 16)
    assert run("eval", *data, "--split", "train", "--model", str(svm_dir), *caches, "--device", "cpu", "--no-coco") == 0

    # Packing keeps the conv top (float16) and the scores close.
    assert run("pack", str(model_dir), str(tmp / "packed"), "--storage", "int8") == 0
    packed = load_model(tmp / "packed")
    from sppdet.features.cache import FeatureCache
    from sppdet.features.extractor import FeatureExtractor
    from sppdet.features.backbones import get_backbone

    extractor = FeatureExtractor(get_backbone("mobilenet_v2"), (160, 224), 2000, "cpu")
    maps = FeatureCache(tmp / "feats").load_maps("000000")
    windows = np.array([[10.0, 10.0, 90.0, 80.0], [30.0, 20.0, 150.0, 110.0]])
    s1, _ = model.predict(model.pool(maps, windows, extractor), windows)
    s2, _ = packed.predict(packed.pool(maps, windows, extractor), windows)
    assert np.allclose(s1, s2, atol=0.05)
    capsys.readouterr()

    # A cache of the lower layers made with other weights is refused, naming the key.
    bad = ["--features", str(tmp / "feats_random"), "--proposals", str(tmp / "props")]
    assert run("eval", *data, "--split", "train", "--model", str(model_dir), *bad, "--device", "cpu", "--no-coco") == 1
    err = capsys.readouterr().err
    assert "weights" in err and "Traceback" not in err

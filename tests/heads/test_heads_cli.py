"""`sppdet finetune` and `sppdet train-svm` end to end on real caches: a tiny synthetic VOC
set, proposals written as files, conv maps from `sppdet extract` (ZF-5, random weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sppdet.features.cache import FeatureCache
from sppdet.heads.model_dir import load_model
from tests.conftest import run
from tests.heads.conftest import CLASSES, write_rect_voc


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("heads_cli")
    root, _ = write_rect_voc(tmp, 12)
    assert run("extract", "--voc", str(root), "--classes", str(tmp / "classes.txt"), "--proposals",
               str(tmp / "props"), "--out", str(tmp / "feats"), "--backbone", "zf5", "--weights",
               "random", "--scales", "96", "--device", "cpu") == 0
    common = ["--voc", str(root), "--classes", str(tmp / "classes.txt"), "--features", str(tmp / "feats"),
              "--proposals", str(tmp / "props"), "--norm-images", "4", "--quiet", "--device", "cpu"]
    return tmp, common


def test_train_svm_with_pooled_features(caches, capsys):
    tmp, common = caches
    out = tmp / "model_pool"
    assert run("train-svm", *common, "--out", str(out), "--bbox-lambda", "10", "--retrain-every", "50") == 0
    text = capsys.readouterr().out
    assert "mining rounds" in text and "cat" in text and "dog" in text
    model = load_model(out)
    cache = FeatureCache(tmp / "feats")
    assert model.head == "pool" and model.classes == list(CLASSES)
    assert model.config["backbone"] == "zf5" and model.config["scales"] == [96]
    assert model.config["levels"] == list(cache.levels) and model.config["proposals"]["method"] == "fixture"
    assert model.config["training"]["positives"] == 12 and model.bbox is not None
    assert not (out / ".train-svm-checkpoint").exists()
    boxes = np.array([[10.0, 10.0, 80.0, 70.0], [50.0, 20.0, 150.0, 110.0]])
    pooled = cache.pooled("000000", boxes)
    assert model.score(pooled).shape == (2, 2) and model.regress(pooled, boxes, 0).shape == (2, 4)


def test_finetune_then_fc7_svms(caches, capsys):
    tmp, common = caches
    # fc7 without fine-tuned layers: a clear error, no traceback.
    assert run("train-svm", *common, "--out", str(tmp / "m7"), "--head", "fc7") == 1
    err = capsys.readouterr().err
    assert "finetune.json" in err and "Traceback" not in err
    ft = tmp / "ft"
    assert run("finetune", *common, "--out", str(ft), "--hidden", "16", "--iterations", "40",
               "--lr-step", "30", "--batch-size", "16", "--fg-per-image", "4",
               "--bg-per-image", "8", "--checkpoint-every", "20") == 0
    assert (ft / "fc.npz").is_file() and not (ft / "finetune.ckpt.npz").exists()
    assert run("train-svm", *common, "--out", str(tmp / "m7"), "--head", "fc7", "--finetuned", str(ft),
               "--no-bbox-reg") == 0
    m7 = load_model(tmp / "m7")
    assert m7.head == "fc7" and m7.svm_W.shape == (2, 16) and m7.bbox is None
    assert m7.feature_scale == json.loads((ft / "finetune.json").read_text())["feature_scale"]
    assert (tmp / "m7" / "finetune.json").is_file()
    pooled = FeatureCache(tmp / "feats").pooled("000001", np.array([[5.0, 5.0, 90.0, 90.0]]))
    assert m7.score(pooled).shape == (1, 2)
    # Fine-tuned layers from other classes are refused.
    (tmp / "c3.txt").write_text("cat\ndog\nbird\n")
    args = [a if a != str(tmp / "classes.txt") else str(tmp / "c3.txt") for a in common]
    assert run("train-svm", *args, "--out", str(tmp / "m8"), "--head", "fc7", "--finetuned", str(ft)) == 1
    assert "classes" in capsys.readouterr().err


def test_eval_with_trained_model_and_caches(caches, capsys):
    """train-svm -> eval --model over the caches: devkit result files and metrics JSON."""
    tmp, common = caches
    out = tmp / "model_eval"
    assert run("train-svm", *common, "--out", str(out), "--retrain-every", "50") == 0
    data = common[:4]  # --voc ROOT --classes FILE
    for extra, name in (([], "with"), (["--no-bbox-reg"], "without")):
        assert run("eval", *data, "--split", "train", "--model", str(out), "--proposals", str(tmp / "props"),
                   "--features", str(tmp / "feats"), "--device", "cpu", "--no-coco", *extra,
                   "--out", str(tmp / f"eval_{name}"), "--json", str(tmp / f"eval_{name}.json")) == 0
        metrics = json.loads((tmp / f"eval_{name}.json").read_text())
        assert metrics["metric"] == "voc07_11pt" and set(metrics["AP"]) == set(CLASSES)
        assert 0.0 <= metrics["mAP"] <= 1.0
        assert (tmp / f"eval_{name}" / "comp4_det_train_cat.txt").is_file()
    capsys.readouterr()
    assert run("eval", *data, "--split", "train", "--model", str(tmp / "no_model"), "--features", str(tmp / "feats")) == 1
    assert "model directory not found" in capsys.readouterr().err


def test_library_train_svm_is_what_the_command_runs(caches, capsys):
    """``sppdet.train_svm`` from Python writes the same model as `sppdet train-svm`."""
    import sppdet
    from sppdet.data import VOCDataset
    from sppdet.heads.bbox_regression import BoxRegParams
    from sppdet.heads.mining import MiningParams
    from sppdet.heads.train import TrainParams

    tmp, common = caches
    assert run("train-svm", *common, "--out", str(tmp / "cli_model"), "--bbox-lambda", "10",
               "--retrain-every", "50") == 0
    params = TrainParams(mining=MiningParams(retrain_every=50), bbox=BoxRegParams(lam=10.0), norm_images=4)
    messages = []
    model = sppdet.train_svm(VOCDataset(tmp / "VOC2007", classes=CLASSES), tmp / "feats", tmp / "props",
                             tmp / "api_model", params=params, device="cpu", progress=False,
                             log=messages.append)
    assert messages == ["VOC2007:train: 12 images, 2 classes, head pool"]
    assert model.path == tmp / "api_model"
    cli_model, api_model = load_model(tmp / "cli_model"), load_model(tmp / "api_model")
    np.testing.assert_array_equal(api_model.svm_W, cli_model.svm_W)
    np.testing.assert_array_equal(api_model.bbox.W, cli_model.bbox.W)
    np.testing.assert_array_equal(model.svm_W, api_model.svm_W)
    with pytest.raises(sppdet.SppdetError, match="only applies with head fc7"):
        sppdet.train_svm(VOCDataset(tmp / "VOC2007", classes=CLASSES), tmp / "feats", tmp / "props",
                         tmp / "x", finetuned_dir=tmp / "ft")


def test_library_finetune_writes_the_fc_layers(caches):
    """``sppdet.finetune`` from Python: fc.npz and finetune.json, and the record returned."""
    import sppdet
    from sppdet.data import VOCDataset
    from sppdet.heads.finetune import FinetuneParams

    tmp, _ = caches
    params = FinetuneParams(hidden=16, iterations=20, lr_step=15, batch_size=16, fg_per_image=4,
                            bg_per_image=8)
    messages = []
    info = sppdet.finetune(VOCDataset(tmp / "VOC2007", classes=CLASSES), tmp / "feats", tmp / "props",
                           tmp / "ft_api", params=params, norm_images=4, device="cpu", progress=False,
                           log=messages.append)
    assert messages[0] == "VOC2007:train: 12 images, 2 classes" and "window pool" in messages[1]
    assert info["summary"]["iterations"] == 20 and info["params"]["hidden"] == 16
    assert json.loads((tmp / "ft_api" / "finetune.json").read_text())["feature_scale"] == info["feature_scale"]
    assert (tmp / "ft_api" / "fc.npz").is_file() and not (tmp / "ft_api" / "finetune.ckpt.npz").exists()
    with pytest.raises(sppdet.SppdetError, match="fg_fraction must be between 0 and 1"):
        sppdet.finetune(VOCDataset(tmp / "VOC2007", classes=CLASSES), tmp / "feats", tmp / "props",
                        tmp / "x", params=FinetuneParams(fg_fraction=1.0))


@pytest.mark.parametrize("args, want", [(["--iterations", "100"], (100, 75)),
                                        ([], (4000, 3000)),
                                        (["--iterations", "100", "--lr-step", "10"], (100, 10))])
def test_finetune_lr_step_defaults_to_three_quarters_of_the_iterations(make_voc, tmp_path, monkeypatch,
                                                                      args, want):
    """`finetune --help` promises the rate drops at 3/4 of --iterations unless --lr-step."""
    from click.testing import CliRunner

    import sppdet.pipeline.training as training
    from sppdet.cli import cli

    seen = {}

    def fake_finetune(*a, params, **kw):
        seen["params"] = params
        return {"summary": {"iterations": params.iterations, "seconds": 0.0,
                            "pool_fg_accuracy": 0, "pool_bg_accuracy": 0}}

    monkeypatch.setattr(training, "finetune", fake_finetune)
    root = make_voc(n_images=2)
    result = CliRunner().invoke(cli, ["finetune", "--voc", str(root), "--split", "train",
                                      "--features", str(tmp_path / "f"), "--proposals", str(tmp_path / "p"),
                                      "--out", str(tmp_path / "m"), *args])
    assert result.exit_code == 0, result.output
    assert (seen["params"].iterations, seen["params"].lr_step) == want

"""`sppdet finetune` and `sppdet train-svm` end to end on real caches: a tiny synthetic VOC
set, proposals written as files, conv maps from `sppdet extract` (ZF-5, random weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sppdet.cli import main
from sppdet.features.cache import FeatureCache
from sppdet.heads.model_dir import load_model

CLASSES = ("cat", "dog")


def run(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def write_proposals(folder, root, rng) -> None:
    """Jittered copies of the ground truth plus random boxes, in the cache format."""
    from sppdet.data import VOCDataset

    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"method": "fixture", "params": {}, "format": 1}))
    ds = VOCDataset(root, split="train", classes=CLASSES)
    for image_id in ds.ids:
        gt = ds.annotation(image_id).boxes
        jit = np.repeat(gt, 10, axis=0) + rng.uniform(-8, 8, (10 * len(gt), 4))
        xy = rng.uniform(0, 100, (30, 2))
        boxes = np.concatenate([jit, np.concatenate([xy, xy + rng.uniform(10, 60, (30, 2))], 1)])
        boxes = np.clip(boxes, 0, [160, 120, 160, 120]).astype(np.float32)
        np.savez(folder / f"{image_id}.npz", boxes=boxes, scores=np.zeros(len(boxes), np.float32))


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    import cv2

    from tests.conftest import write_voc_xml

    tmp = tmp_path_factory.mktemp("heads_cli")
    root = tmp / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = [f"{k:06d}" for k in range(12)]
    for k, image_id in enumerate(ids):
        image = rng.integers(0, 60, (120, 160, 3), dtype=np.uint8)
        x1, y1 = int(rng.integers(5, 60)), int(rng.integers(5, 40))
        x2, y2 = x1 + int(rng.integers(40, 90)), y1 + int(rng.integers(30, 70))
        cv2.rectangle(image, (x1 - 1, y1 - 1), (x2 - 1, y2 - 1), (200, 40 + 180 * (k % 2), 60), -1)
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), image)
        write_voc_xml(root / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", 160, 120,
                      [(CLASSES[k % 2], (x1, y1, x2, y2), 0)])
    (root / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    (tmp / "classes.txt").write_text("cat\ndog\n")
    write_proposals(tmp / "props", root, rng)
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
        assert run("eval", *data, "--model", str(out), "--proposals", str(tmp / "props"),
                   "--features", str(tmp / "feats"), "--device", "cpu", "--no-coco", *extra,
                   "--out", str(tmp / f"eval_{name}"), "--json", str(tmp / f"eval_{name}.json")) == 0
        metrics = json.loads((tmp / f"eval_{name}.json").read_text())
        assert metrics["metric"] == "voc07_11pt" and set(metrics["AP"]) == set(CLASSES)
        assert 0.0 <= metrics["mAP"] <= 1.0
        assert (tmp / f"eval_{name}" / "comp4_det_train_cat.txt").is_file()
    capsys.readouterr()
    assert run("eval", *data, "--model", str(tmp / "no_model"), "--features", str(tmp / "feats")) == 1
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

"""`sppdet finetune` and `sppdet train-svm` wired end to end, on stand-in caches.

The real conv-feature and proposal caches live in other modules; here small stand-ins
with the same interface (``FeatureCache(dir).pooled``, ``.manifest``;
``ProposalCache(dir).load``) are installed in ``sys.modules``, so the test checks the
commands' wiring, options, outputs and errors.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from sppdet.cli import main
from sppdet.data import VOCDataset
from sppdet.heads.model_dir import load_model
from sppdet.heads.sources import TrainingImage
from tests.heads.synthetic_heads import SyntheticSource, jitter, random_boxes

CLASSES = ("cat", "dog")


@pytest.fixture
def fake_caches(make_voc, tmp_path, monkeypatch):
    root = make_voc(n_images=16, classes=CLASSES)
    ds = VOCDataset(root, split="train", classes=CLASSES)
    rng = np.random.default_rng(0)
    images, props = [], {}
    for image_id in ds.ids:
        ann = ds.annotation(image_id)
        p = np.concatenate([jitter(rng, ann.boxes, 8, 0.15), random_boxes(rng, 40, 150.0)])
        props[image_id] = p
        images.append(TrainingImage(image_id, p, ann.boxes, ann.labels, ann.difficult))
    source = SyntheticSource(images, len(CLASSES), dim=16)

    class FeatureCache:
        def __init__(self, path):
            self.manifest = {"backbone": "synthetic", "layer": "x", "scales": [100], "levels": [1]}

        def pooled(self, image_id, boxes):
            return source.pooled(image_id, boxes)

    class ProposalCache:
        def __init__(self, path):
            pass

        def load(self, image_id):
            return props[image_id]

    monkeypatch.setitem(sys.modules, "sppdet.features.cache",
                        types.SimpleNamespace(FeatureCache=FeatureCache))
    monkeypatch.setitem(sys.modules, "proposals.cache", types.SimpleNamespace(ProposalCache=ProposalCache))
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    (tmp_path / "props").mkdir()
    (tmp_path / "props" / "meta.json").write_text(json.dumps({"method": "fake", "params": {}, "format": 1}))
    return root, tmp_path, source


def run(*args):
    try:
        main(list(args))
    except SystemExit as e:
        return e.code
    return 0


def test_train_svm_pool_and_fc7(fake_caches, capsys):
    root, tmp, source = fake_caches
    common = ["--voc", str(root), "--features", str(tmp / "feats"), "--proposals", str(tmp / "props"),
              "--classes", str(tmp / "classes.txt"), "--norm-images", "5", "--quiet"]
    out = tmp / "model_pool"
    assert run("train-svm", *common, "--out", str(out), "--bbox-lambda", "1", "--retrain-every", "100") == 0
    text = capsys.readouterr().out
    assert "mining rounds" in text and "cat" in text and "dog" in text
    model = load_model(out)
    assert model.head == "pool" and model.classes == list(CLASSES)
    assert model.config["backbone"] == "synthetic" and model.config["proposals"]["method"] == "fake"
    assert model.config["training"]["positives"] == 16 and model.bbox is not None

    # fc7 without fine-tuned layers: a clear error, no traceback.
    assert run("train-svm", *common, "--out", str(tmp / "m7"), "--head", "fc7") == 1
    err = capsys.readouterr().err
    assert "finetune.json" in err and "Traceback" not in err

    ft = tmp / "ft"
    assert run("finetune", *common, "--out", str(ft), "--hidden", "16", "--iterations", "60",
               "--lr-step", "40", "--batch-size", "16", "--fg-per-image", "4",
               "--bg-per-image", "8", "--checkpoint-every", "20") == 0
    assert (ft / "fc.pt").is_file() and not (ft / "finetune.ckpt.pt").exists()
    assert run("train-svm", *common, "--out", str(tmp / "m7"), "--head", "fc7", "--finetuned", str(ft),
               "--no-bbox-reg") == 0
    m7 = load_model(tmp / "m7")
    assert m7.head == "fc7" and m7.svm_W.shape == (2, 16) and m7.bbox is None
    assert m7.feature_scale == json.loads((ft / "finetune.json").read_text())["feature_scale"]
    ti = source.by_id[next(iter(source.by_id))]
    assert m7.score(source.pooled(ti.image_id, ti.gt_boxes)).shape == (ti.num_gt, 2)

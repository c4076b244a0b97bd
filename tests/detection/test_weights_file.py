"""Models whose features came from `sppdet extract --weights FILE` work in `detect`, `eval`
and ``sppdet.Detector.load`` given that file again (``--weights FILE`` / ``weights=``),
checked against the sha256 the model records; missing or other files are one-line errors.

A tiny synthetic VOC set, proposals written as files, ZF-5 with perturbed random weights
saved to a file, conv maps from `sppdet extract --weights FILE`, a pool model with random
SVMs on the cache's features."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import sppdet
from sppdet.errors import WeightsError
from sppdet.features.backbones import get_backbone
from sppdet.features.cache import FeatureCache
from sppdet.heads.model_dir import DetectorModel, save_model
from tests.conftest import run

CLASSES = ("cat", "dog")


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def random_model(cache: FeatureCache, seed: int) -> DetectorModel:
    rng = np.random.default_rng(seed)
    config = {**cache.feature_config.to_dict(), "head": "pool", "classes": list(CLASSES),
              "feature_scale": 1.0, "proposals": {"method": "edgeboxes", "params": {"max_boxes": 30}},
              "test": {"score_threshold": -1e9, "nms_iou": 0.3, "max_per_image": 20}}
    return DetectorModel(config, rng.normal(0, 0.01, (2, cache.dim)).astype(np.float32),
                         rng.normal(0, 1, 2).astype(np.float32))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import cv2

    from tests.conftest import write_voc_xml

    tmp = tmp_path_factory.mktemp("weights_file")
    root = tmp / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = [f"{k:06d}" for k in range(3)]
    props = tmp / "props"
    props.mkdir()
    (props / "meta.json").write_text(json.dumps({"method": "fixture", "params": {}, "format": 1}))
    for k, image_id in enumerate(ids):
        image = rng.integers(0, 60, (120, 160, 3), dtype=np.uint8)
        cv2.rectangle(image, (20, 15), (90, 80), (200, 40 + 180 * (k % 2), 60), -1)
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), image)
        write_voc_xml(root / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", 160, 120,
                      [(CLASSES[k % 2], (21, 16, 91, 81), 0)])
        xy = rng.uniform(0, 100, (20, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 50, (20, 2))], 1).astype(np.float32)
        np.savez(props / f"{image_id}.npz", boxes=boxes, scores=np.zeros(20, np.float32),
                 image_hw=np.array([120, 160], np.int32))
    (root / "ImageSets" / "Main" / "val.txt").write_text("".join(f"{i}\n" for i in ids))
    (tmp / "classes.txt").write_text("cat\ndog\n")
    # Weights that are neither the random initialisation nor any torchvision set.
    trunk = get_backbone("zf5", "random").trunk
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in trunk.parameters():
            p.add_(0.002 * torch.randn(p.shape, generator=gen))
    weights = tmp / "mine" / "trunk.pth"
    weights.parent.mkdir()
    torch.save(trunk.state_dict(), weights)
    assert run("extract", "--voc", str(root), "--split", "val", "--classes", str(tmp / "classes.txt"),
               "--proposals", str(props), "--out", str(tmp / "feats"), "--backbone", "zf5",
               "--weights", str(weights), "--scales", "96", "--device", "cpu") == 0
    cache = FeatureCache(tmp / "feats")
    assert cache.config["weights"].startswith("file:trunk.pth#sha256:")
    save_model(tmp / "model", random_model(cache, 0))
    return tmp, root, weights, cache


def test_detector_uses_the_file_and_matches_the_cache(setup):
    tmp, root, weights, cache = setup
    det = sppdet.Detector.load(tmp / "model", "cpu", weights=weights)
    # The extractor's conv maps are the ones `extract --weights FILE` cached (float16 there).
    from sppdet.data import read_image

    image = read_image(root / "JPEGImages" / "000000.jpg")
    maps = next(iter(det.conv_maps(image).values()))
    cached = cache.load_maps("000000")
    assert torch.isfinite(cached.maps[0]).all() and float(cached.maps[0].abs().max()) > 0

    assert len(maps.maps) == len(cached.maps) == 1
    tol = 2e-3 * float(cached.maps[0].float().abs().max())
    np.testing.assert_allclose(maps.maps[0].float().numpy(), cached.maps[0].float().numpy(),
                               rtol=2e-3, atol=tol)
    # ... and not those of the random initialisation the file was perturbed from.
    from sppdet.features.extractor import FeatureExtractor

    plain = FeatureExtractor(get_backbone("zf5", "random"), [96], 1000, torch.device("cpu"))
    diff = (plain.conv_maps(image).maps[0] - cached.maps[0].float()).abs().max()
    assert float(diff) > 20 * tol
    # A renamed copy is the same weights: accepted.
    copy = tmp / "renamed.pth"
    shutil.copyfile(weights, copy)
    sppdet.Detector.load(tmp / "model", "cpu", weights=str(copy))


def test_missing_and_wrong_weights_are_refused(setup, tmp_path):
    tmp, root, weights, cache = setup
    with pytest.raises(WeightsError, match=r"trunk\.pth.*--weights FILE"):
        sppdet.Detector.load(tmp / "model", "cpu")
    other = tmp_path / "trunk.pth"  # same name, other contents
    torch.save(get_backbone("zf5", "random").trunk.state_dict(), other)
    with pytest.raises(WeightsError, match="not the weights the model was trained with"):
        sppdet.Detector.load(tmp / "model", "cpu", weights=other)
    with pytest.raises(WeightsError, match="not found"):
        sppdet.Detector.load(tmp / "model", "cpu", weights=tmp_path / "nowhere.pth")
    # A model on random weights needs no file, and a file given to it is refused.
    on_random = random_model(cache, 1)
    on_random.config["weights"] = "random(seed=0)"
    save_model(tmp_path / "random_model", on_random)
    sppdet.Detector.load(tmp_path / "random_model", "cpu")
    with pytest.raises(WeightsError, match="no model was trained with this file"):
        sppdet.Detector.load(tmp_path / "random_model", "cpu", weights=weights)


def test_detect_cli_with_and_without_weights(setup, capsys):
    tmp, root, weights, _ = setup
    image = str(root / "JPEGImages" / "000001.jpg")
    assert run("detect", image, "--model", str(tmp / "model"), "--device", "cpu") == 1
    one_line_error(capsys, str(tmp / "model" / "config.json"), "trunk.pth", "--weights")
    out_json = tmp / "dets.json"
    assert run("detect", image, "--model", str(tmp / "model"), "--weights", str(weights),
               "--device", "cpu", "--json", str(out_json), "--score-thresh", "-1e9") == 0
    got = json.loads(out_json.read_text())["images"][0]
    want = sppdet.Detector.load(tmp / "model", "cpu", weights=weights,
                                score_threshold=-1e9)(image).to_dict()
    assert got["detections"] == want["detections"] and len(got["detections"]) > 0


def test_eval_cli_with_and_without_weights(setup, capsys):
    tmp, root, weights, _ = setup
    args = ["eval", "--voc", str(root), "--split", "val", "--classes", str(tmp / "classes.txt"),
            "--model", str(tmp / "model"), "--device", "cpu", "--proposals", str(tmp / "props"),
            "--features", str(tmp / "feats"), "--no-coco"]
    assert run(*args) == 1
    one_line_error(capsys, "trunk.pth", "--weights")
    assert run(*args, "--weights", str(weights), "--json", str(tmp / "eval.json")) == 0
    assert "mAP" in capsys.readouterr().out
    assert 0.0 <= json.loads((tmp / "eval.json").read_text())["mAP"] <= 1.0
    # --weights without --model: a usage error
    assert run("eval", "--voc", str(root), "--split", "val", "--classes", str(tmp / "classes.txt"),
               "--detections", str(tmp), "--weights", str(weights)) == 2


def test_conv_finetune_over_a_file_weights_cache_is_a_clear_error(tmp_path):
    from sppdet.heads.conv_model import _weights_argument

    assert _weights_argument("random(seed=0)", tmp_path) == "random"
    assert _weights_argument("IMAGENET1K_V1", tmp_path) == "IMAGENET1K_V1"
    with pytest.raises(WeightsError, match=r"manifest\.json.*does not take a weights file"):
        _weights_argument("file:trunk.pth#sha256:0123456789abcdef", tmp_path)

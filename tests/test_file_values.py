"""Every value read from a model's config.json, a feature cache's manifest.json or a
proposal directory's meta.json is checked (type, range, shape against the arrays): each key
corrupted in turn (wrong type, out of range, missing, shape mismatch) gives one line
``Error: FILE: key 'KEY': reason`` from the CLI, exit status 1, no traceback."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sppdet.cli import main
from sppdet.heads.bbox_regression import BoxRegressor
from sppdet.heads.model_dir import DetectorModel, save_model

CLASSES = ["cat", "dog"]
DELETE = object()
FEATURES = {"backbone": "zf5", "weights": "random(seed=0)", "layer": "conv5 + ReLU", "channels": 256,
            "stride": 16, "offset": 0.0, "scales": [96], "max_size": 1000}
LEVELS = [1, 2]
D_POOL = 256 * 5
PROPOSALS = {"format": 1, "method": "edgeboxes", "params": {"max_boxes": 30, "min_side": 4.0}}


def run(*args: str) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def set_key(obj: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        obj = obj[p]
    if value is DELETE:
        del obj[last]
    else:
        obj[last] = value


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A pool model (with box regression), a one-image VOC set, its proposals and a feature
    cache manifest, all consistent: the untouched files evaluate fine."""
    import cv2

    from sppdet.features.cache import FeatureCache
    from tests.conftest import write_voc_xml

    tmp = tmp_path_factory.mktemp("file_values")
    rng = np.random.default_rng(0)
    config = {**FEATURES, "levels": LEVELS, "head": "pool", "classes": CLASSES, "feature_scale": 0.5,
              "proposals": PROPOSALS, "bbox_regression": True,
              "test": {"score_threshold": -1e9, "nms_iou": 0.3, "max_per_image": 20,
                       "display_thresholds": {"cat": 0.1, "dog": 0.2}}}
    bbox = BoxRegressor(rng.normal(0, 1e-3, (2, D_POOL, 4)).astype(np.float32), np.zeros((2, 4), np.float32),
                        np.zeros((2, 4), np.float32), np.ones((2, 4), np.float32))
    save_model(tmp / "model", DetectorModel(config, rng.normal(0, 0.01, (2, D_POOL)).astype(np.float32),
                                            np.zeros(2, np.float32), bbox))
    root = tmp / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "JPEGImages" / "000001.jpg"), image)
    write_voc_xml(root / "Annotations" / "000001.xml", "000001.jpg", 80, 60, [("cat", (10, 10, 50, 40), 0)])
    (root / "ImageSets" / "Main" / "val.txt").write_text("000001\n")
    (tmp / "classes.txt").write_text("cat\ndog\n")
    props = tmp / "props"
    props.mkdir()
    (props / "meta.json").write_text(json.dumps(PROPOSALS))
    np.savez(props / "000001.npz", boxes=np.array([[5, 5, 40, 40], [20, 10, 70, 50]], np.float32),
             scores=np.array([1.0, 0.5], np.float32), image_hw=np.array([60, 80], np.int32))
    FeatureCache.create(tmp / "feats", {**FEATURES, "proposals": PROPOSALS}, levels=LEVELS)
    return tmp


def corrupted_copy(src: Path, dst: Path, json_name: str, key: str, value: Any) -> Path:
    """Copy folder ``src`` to ``dst`` with ``key`` of its JSON file ``json_name`` set to
    ``value`` (or removed, for DELETE); returns ``dst``."""
    shutil.copytree(src, dst)
    doc = json.loads((dst / json_name).read_text())
    set_key(doc, key, value if value is DELETE else copy.deepcopy(value))
    (dst / json_name).write_text(json.dumps(doc))
    return dst


def case_ids(cases: list[tuple]) -> list[str]:
    """Test ids KEY=VALUE of (key, value, ...) cases."""
    return [f"{c[0]}={'DELETE' if c[1] is DELETE else json.dumps(c[1])}" for c in cases]


def eval_args(tmp: Path, model: Path, proposals: Path | None = None, features: Path | None = None):
    args = ["eval", "--voc", tmp / "VOC2007", "--split", "val", "--classes", tmp / "classes.txt",
            "--model", model, "--device", "cpu", "--no-coco"]
    if proposals is not None:
        args += ["--proposals", proposals]
    if features is not None:
        args += ["--features", features]
    return args


def expect_one_line(capsys, code: int, file: Path, key: str) -> str:
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    # (progress bars aside: eval shows one while detecting)
    lines = [line for line in err.splitlines() if line.strip() and not re.search(r"\|.*/s\]$", line)]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert str(file) in lines[0] and f"key '{key}'" in lines[0], (file, key, lines[0])
    return lines[0]


def test_the_untouched_files_work(files, capsys):
    assert run(*eval_args(files, files / "model", files / "props")) == 0
    assert "mAP" in capsys.readouterr().out
    # The feature cache opens (its manifest is read before any image is needed).
    from sppdet.features.cache import FeatureCache

    assert FeatureCache(files / "feats").levels == tuple(LEVELS)


# (key, corrupted value, the key the error names, the file it names: config.json or heads.npz)
CONFIG_CASES = [
    ("format_version", "2", "format_version", None),
    ("head", DELETE, "head", None),
    ("head", "svm", "head", None),
    ("classes", "cat", "classes", None),
    ("classes", [], "classes", None),
    ("classes", ["cat", "cat"], "classes[1]", None),
    ("classes", ["cat", 2], "classes[1]", None),
    ("classes", ["cat", "dog", "cow"], "num_classes", None),
    ("feature_scale", DELETE, "feature_scale", None),
    ("feature_scale", "0.5", "feature_scale", None),
    ("feature_scale", -1, "feature_scale", None),
    ("feature_scale", math.inf, "feature_scale", None),
    ("fc7_scale", "x", "fc7_scale", None),
    ("bbox_regression", "yes", "bbox_regression", None),
    ("num_classes", 3, "num_classes", None),
    ("num_classes", "2", "num_classes", None),
    ("svm_dim", 7, "svm_dim", None),
    ("backbone", DELETE, "backbone", None),
    ("backbone", "lenet", "backbone", None),
    ("backbone", 5, "backbone", None),
    ("weights", "/tmp/evil.pth", "weights", None),
    ("weights", "../w.pth", "weights", None),
    ("weights", 5, "weights", None),
    ("weights", DELETE, "weights", None),
    ("layer", 3, "layer", None),
    ("channels", 0, "channels", None),
    ("channels", "256", "channels", None),
    ("channels", 255, "svm_W", "heads.npz"),
    ("stride", 1.5, "stride", None),
    ("stride", DELETE, "stride", None),
    ("offset", "0", "offset", None),
    ("offset", math.nan, "offset", None),
    ("scales", [], "scales", None),
    ("scales", [96, -1], "scales[1]", None),
    ("scales", "96", "scales", None),
    ("scales", [96, 96], "scales[1]", None),
    ("max_size", 0, "max_size", None),
    ("max_size", DELETE, "max_size", None),
    ("levels", [0], "levels[0]", None),
    ("levels", "1,2", "levels", None),
    ("levels", [1, 2, 3], "svm_W", "heads.npz"),
    ("proposals", "edgeboxes", "proposals", None),
    ("proposals.method", 3, "proposals.method", None),
    ("proposals.params", [], "proposals.params", None),
    ("proposals.params.max_boxes", 0, "proposals.params.max_boxes", None),
    ("proposals.params.max_boxes", "many", "proposals.params.max_boxes", None),
    ("proposals.params.min_side", -1, "proposals.params.min_side", None),
    ("proposals.params.order", {"a": 1}, "proposals.params.order", None),
    ("test", [], "test", None),
    ("test.nms_iou", 1.5, "test.nms_iou", None),
    ("test.nms_iou", "0.3", "test.nms_iou", None),
    ("test.max_per_image", 0, "test.max_per_image", None),
    ("test.score_threshold", None, "test.score_threshold", None),
    ("test.display_thresholds", {"cow": 0.1}, "test.display_thresholds.cow", None),
    ("test.display_thresholds", {"cat": "high"}, "test.display_thresholds.cat", None),
    ("test.display_thresholds", [0.1, 0.2], "test.display_thresholds", None),
    ("weights_storage", "int4", "weights_storage", None),
    ("fc6_rank", 0, "fc6_rank", None),
    ("conv_top", 5, "conv_top", None),
    ("conv_top", {"backbone": "zf5", "start": 3}, "conv_top.end", None),
]


@pytest.mark.parametrize("key,value,named,file", CONFIG_CASES,
                         ids=case_ids(CONFIG_CASES))
def test_each_config_key_corrupted(files, tmp_path, capsys, key, value, named, file):
    model = corrupted_copy(files / "model", tmp_path / "model", "config.json", key, value)
    image = files / "VOC2007" / "JPEGImages" / "000001.jpg"
    code = run("detect", image, "--model", model, "--device", "cpu")
    expect_one_line(capsys, code, model / (file or "config.json"), named)


def rewrite_npz(path: Path, **changes: Any) -> None:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    np.savez(path, **arrays)


ARRAY_CASES = [
    ("svm_W", np.zeros((2, D_POOL - 1), np.float32)),
    ("svm_W", np.full((2, D_POOL), np.nan, np.float32)),
    ("svm_b", np.zeros(3, np.float32)),
    ("svm_b", np.array([0.0, np.inf], np.float32)),  # -inf is a class never trained; +inf is not
    ("bbox_W", np.zeros((2, D_POOL, 3), np.float32)),
    ("bbox_b", np.zeros((2,), np.float32)),
    ("bbox_mean", np.zeros((1, 4), np.float32)),
    ("bbox_std", np.full((2, 4), np.inf, np.float32)),
]


@pytest.mark.parametrize("key,array", ARRAY_CASES, ids=[f"{k}{a.shape}" for k, a in ARRAY_CASES])
def test_each_model_array_against_the_config(files, tmp_path, capsys, key, array):
    model = tmp_path / "model"
    shutil.copytree(files / "model", model)
    rewrite_npz(model / "heads.npz", **{key: array})
    code = run("detect", files / "VOC2007" / "JPEGImages" / "000001.jpg", "--model", model, "--device", "cpu")
    expect_one_line(capsys, code, model / "heads.npz", key)


MANIFEST_CASES = [
    ("format", 2, "format"),
    ("format", "1", "format"),
    ("format", DELETE, "format"),
    ("config", [], "config"),
    ("config.channels", "256", "config.channels"),
    ("config.channels", -3, "config.channels"),
    ("config.scales", [96.5], "config.scales[0]"),
    ("config.weights", "../w.pth", "config.weights"),
    ("config.offset", None, "config.offset"),
    ("config.stride", DELETE, "config.stride"),
    ("config.max_size", True, "config.max_size"),
    ("config.proposals", "edgeboxes", "config.proposals"),
    ("config.proposals.params", "x", "config.proposals.params"),
    ("levels", [1, 0], "levels[1]"),
    ("levels", 6, "levels"),
    ("hash", 5, "hash"),
]


@pytest.mark.parametrize("key,value,named", MANIFEST_CASES,
                         ids=case_ids(MANIFEST_CASES))
def test_each_feature_manifest_key_corrupted(files, tmp_path, capsys, key, value, named):
    feats = corrupted_copy(files / "feats", tmp_path / "feats", "manifest.json", key, value)
    code = run(*eval_args(files, files / "model", files / "props", feats))
    expect_one_line(capsys, code, feats / "manifest.json", named)


META_CASES = [
    ("format", 2, "format"),
    ("method", "", "method"),
    ("method", DELETE, "method"),
    ("params", [1], "params"),
    ("params.max_boxes", {"a": 1}, "params.max_boxes"),
]


@pytest.mark.parametrize("key,value,named", META_CASES,
                         ids=case_ids(META_CASES))
def test_each_proposal_meta_key_corrupted(files, tmp_path, capsys, key, value, named):
    props = corrupted_copy(files / "props", tmp_path / "props", "meta.json", key, value)
    code = run(*eval_args(files, files / "model", props))
    expect_one_line(capsys, code, props / "meta.json", named)


PROPOSAL_ARRAY_CASES = [
    ("boxes", np.zeros((2, 5), np.float32)),
    ("boxes", np.zeros((8,), np.float32)),
    ("boxes", np.array([[0, 0, np.nan, 9], [1, 1, 5, 5]], np.float32)),
    ("scores", np.zeros(3, np.float32)),
    ("image_hw", np.array([60, 80, 3], np.int32)),
]


@pytest.mark.parametrize("key,array", PROPOSAL_ARRAY_CASES,
                         ids=[f"{k}{a.shape}-{i}" for i, (k, a) in enumerate(PROPOSAL_ARRAY_CASES)])
def test_each_proposal_array_checked(files, tmp_path, capsys, key, array):
    props = tmp_path / "props"
    shutil.copytree(files / "props", props)
    rewrite_npz(props / "000001.npz", **{key: array})
    code = run(*eval_args(files, files / "model", props))
    expect_one_line(capsys, code, props / "000001.npz", key)


def feature_file(files: Path, tmp_path: Path, **changes: Any) -> Path:
    """A copy of the feature cache holding one image's maps (channels of the manifest)."""
    feats = tmp_path / "feats"
    shutil.copytree(files / "feats", feats)
    arrays = {"map_0": np.zeros((256, 6, 8), np.float16), "factors": np.array([[1.6, 1.6]]),
              "image_hw": np.array([60, 80]), "scales": np.array([96])}
    arrays.update(changes)
    np.savez(feats / "000001.npz", **arrays)
    return feats


FEATURE_ARRAY_CASES = [
    ("map_0", np.zeros((255, 6, 8), np.float16)),
    ("map_0", np.zeros((256, 48), np.float16)),
    ("factors", np.array([1.6, 1.6])),
    ("factors", np.array([[0.0, 1.6]])),
    ("image_hw", np.array([60, 80, 3])),
]


@pytest.mark.parametrize("key,array", FEATURE_ARRAY_CASES,
                         ids=[f"{k}{a.shape}-{i}" for i, (k, a) in enumerate(FEATURE_ARRAY_CASES)])
def test_each_feature_array_checked(files, tmp_path, capsys, key, array):
    feats = feature_file(files, tmp_path, **{key: array})
    code = run(*eval_args(files, files / "model", files / "props", feats))
    expect_one_line(capsys, code, feats / "000001.npz", key)


def test_an_untrained_class_minus_inf_bias_loads(files, tmp_path):
    from sppdet.heads.model_dir import load_model

    model = tmp_path / "model"
    shutil.copytree(files / "model", model)
    rewrite_npz(model / "heads.npz", svm_b=np.array([0.0, -np.inf], np.float32))
    assert load_model(model).svm_b[1] == -np.inf


def test_a_good_feature_file_is_used(files, tmp_path, capsys):
    feats = feature_file(files, tmp_path)
    assert run(*eval_args(files, files / "model", files / "props", feats)) == 0, capsys.readouterr().err


def test_a_model_names_no_file_to_read(tmp_path):
    """A path in a model's proposal settings is ignored: the structured edge model comes from
    SPPDET_EDGE_MODEL only; and edges other than the recorded ones are refused."""
    from sppdet.detector import proposer_for
    from sppdet.errors import SppdetError

    marker = tmp_path / "model.yml.gz"
    marker.write_text("not read")
    p = proposer_for({"method": "edgeboxes", "params": {"edge_model": str(marker), "max_boxes": 5}})
    assert p.method.edges.params()["edges"] == "sobel-canny-fallback"
    with pytest.raises(SppdetError, match="SPPDET_EDGE_MODEL"):
        proposer_for({"method": "edgeboxes", "params": {"edges": "structured-forest",
                                                        "edge_model_sha256": "00" * 32}})

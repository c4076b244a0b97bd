"""The model directory: save / load round trip, format versions, clear errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from sppdet.errors import ModelFormatError
from sppdet.heads.bbox_regression import BoxRegressor
from sppdet.heads.fc_head import FcHead
from sppdet.heads.model_dir import FORMAT_VERSION, DetectorModel, load_model, save_model

CLASSES = ["cat", "dog", "bird"]


def make_model(head: str, dim: int = 20, hidden: int = 16, seed: int = 0) -> DetectorModel:
    rng = np.random.default_rng(seed)
    C = len(CLASSES)
    svm_dim = hidden if head == "fc7" else dim
    fc = None
    config = {"head": head, "classes": CLASSES, "feature_scale": 0.37,
              "features": {"backbone": "mobilenet_v2", "layer": "features.13", "scales": [688],
                           "levels": [1, 2, 3, 6]}}
    if head == "fc7":
        torch.manual_seed(seed)
        fc = FcHead(dim, hidden, C)
        for p in fc.parameters():
            torch.nn.init.normal_(p, std=0.3)
        config["fc7_scale"] = 1.7
    bbox = BoxRegressor(rng.normal(0, 0.01, (C, dim, 4)).astype(np.float32),
                        rng.normal(0, 0.1, (C, 4)).astype(np.float32),
                        rng.normal(0, 0.1, (C, 4)).astype(np.float32),
                        rng.uniform(0.1, 0.3, (C, 4)).astype(np.float32))
    return DetectorModel(config, rng.normal(size=(C, svm_dim)).astype(np.float32),
                         rng.normal(size=C).astype(np.float32), bbox, fc)


@pytest.mark.parametrize("head", ["pool", "fc7"])
def test_saved_and_reloaded_model_gives_identical_scores(tmp_path, head):
    model = make_model(head)
    rng = np.random.default_rng(1)
    pooled = rng.uniform(0, 3, (50, 20)).astype(np.float32)
    boxes = np.concatenate([rng.uniform(0, 100, (50, 2)), rng.uniform(120, 300, (50, 2))], axis=1)
    save_model(tmp_path / "m", model)
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score(pooled), model.score(pooled))
    np.testing.assert_array_equal(loaded.regress(pooled, boxes, 2), model.regress(pooled, boxes, 2))
    assert loaded.classes == CLASSES and loaded.head == head
    assert loaded.config["format_version"] == FORMAT_VERSION
    assert loaded.config["features"]["levels"] == [1, 2, 3, 6]


def test_score_is_the_documented_formula():
    """score = (scale * pooled) @ W.T + b for head pool; fc7 goes through fc6/fc7 first."""
    rng = np.random.default_rng(2)
    pooled = rng.uniform(0, 3, (7, 20)).astype(np.float32)
    m = make_model("pool")
    np.testing.assert_allclose(m.score(pooled), (pooled * 0.37) @ m.svm_W.T + m.svm_b, rtol=1e-5)
    f = make_model("fc7")
    x = torch.from_numpy(pooled * np.float32(0.37))
    with torch.no_grad():
        h = torch.relu(f.fc.fc7(torch.relu(f.fc.fc6(x)))).numpy() * 1.7
    np.testing.assert_allclose(f.score(pooled), h @ f.svm_W.T + f.svm_b, rtol=1e-4, atol=1e-5)


def test_model_without_box_regression_leaves_boxes(tmp_path):
    model = make_model("pool")
    model.bbox = None
    save_model(tmp_path / "m", model)
    loaded = load_model(tmp_path / "m")
    boxes = np.array([[1.0, 2.0, 30.0, 40.0]])
    np.testing.assert_array_equal(loaded.regress(np.ones((1, 20)), boxes, 0), boxes)
    assert loaded.regress(np.ones((1, 20)), boxes).shape == (1, 3, 4)


def test_newer_or_unknown_format_version_fails_clearly(tmp_path):
    save_model(tmp_path / "m", make_model("pool"))
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for bad, words in ((FORMAT_VERSION + 1, "newer"), ("1", "format_version"), (0, "unknown")):
        cfg["format_version"] = bad
        cfg_path.write_text(json.dumps(cfg))
        with pytest.raises(ModelFormatError, match=words):
            load_model(tmp_path / "m")


def test_missing_or_broken_files_fail_clearly(tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFormatError, match="config.json"):
        load_model(tmp_path / "empty")
    save_model(tmp_path / "m", make_model("fc7"))
    (tmp_path / "m" / "fc.npz").unlink()
    with pytest.raises(ModelFormatError, match="fc.npz"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "heads.npz").unlink()
    with pytest.raises(ModelFormatError, match="heads.npz"):
        load_model(tmp_path / "m")
    save_model(tmp_path / "n", make_model("pool"))
    cfg = json.loads((tmp_path / "n" / "config.json").read_text())
    cfg["classes"] = ["cat"]
    (tmp_path / "n" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="key 'num_classes': is 3, but 'classes' lists 1"):
        load_model(tmp_path / "n")
    del cfg["num_classes"]
    (tmp_path / "n" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match=r"heads.npz: key 'svm_W': shape \(3, 20\), expected \(1, 20\)"):
        load_model(tmp_path / "n")
    (tmp_path / "n" / "config.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        load_model(tmp_path / "n")


def round_by_hand(a: np.ndarray, storage: str) -> np.ndarray:
    """float16 rounding, or int8 with one scale per row (max |row| / 127), written out."""
    a = np.asarray(a, np.float32)
    if storage == "float16":
        return a.astype(np.float16).astype(np.float32)
    out = np.empty_like(a)
    for r in range(len(a)):
        step = np.abs(a[r]).max() / 127.0
        out[r] = np.round(a[r] / step) * step if step > 0 else a[r]
    return out


@pytest.mark.parametrize("storage", ["float16", "int8"])
@pytest.mark.parametrize("head", ["pool", "fc7"])
def test_packed_model_is_smaller_and_scores_match_rounding_by_hand(tmp_path, head, storage):
    from sppdet.models.pack import pack_model

    model = make_model(head, dim=200, hidden=64)
    rng = np.random.default_rng(2)
    pooled = rng.uniform(0, 3, (40, 200)).astype(np.float32)
    boxes = np.concatenate([rng.uniform(0, 100, (40, 2)), rng.uniform(120, 300, (40, 2))], axis=1)
    save_model(tmp_path / "m", model)
    before, after = pack_model(tmp_path / "m", tmp_path / "packed", storage)
    assert after < (0.6 if storage == "float16" else 0.45) * before  # config.json is a fixed overhead
    assert not list((tmp_path / "packed").glob("*.pt"))
    packed = load_model(tmp_path / "packed")
    assert packed.svm_W.dtype == np.float32 and packed.config["weights_storage"] == storage
    ref = model.score(pooled)
    # Reference: the same model with its weight matrices (not biases) rounded by hand.
    rounded = make_model(head, dim=200, hidden=64)
    rounded.svm_W = round_by_hand(rounded.svm_W, storage)
    rounded.bbox = dataclasses.replace(rounded.bbox, W=np.stack(
        [round_by_hand(w.reshape(1, -1), storage).reshape(w.shape) for w in rounded.bbox.W]))
    if head == "fc7":
        with torch.no_grad():
            for name, p in rounded.fc.named_parameters():
                if p.ndim == 2:
                    p.copy_(torch.from_numpy(round_by_hand(p.numpy(), storage)))
    np.testing.assert_allclose(packed.score(pooled), rounded.score(pooled), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(packed.regress(pooled, boxes, 2), rounded.regress(pooled, boxes, 2),
                               rtol=1e-5, atol=1e-4)
    assert np.abs(packed.score(pooled) - ref).max() < (2e-3 if storage == "float16" else 2e-2) * np.abs(ref).max()
    with pytest.raises(Exception, match="another directory"):
        pack_model(tmp_path / "m", tmp_path / "m")


def test_version_1_model_with_fc_pt_still_loads(tmp_path):
    """Format version 1 kept the fc layers in fc.pt (torch.save); such models load unchanged."""
    model = make_model("fc7", dim=50, hidden=16)
    save_model(tmp_path / "m", model)
    (tmp_path / "m" / "fc.npz").unlink()
    torch.save({"config": model.fc.config(), "state_dict": model.fc.state_dict()}, tmp_path / "m" / "fc.pt")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "format_version": 1}))
    pooled = np.random.default_rng(0).uniform(0, 3, (5, 50)).astype(np.float32)
    np.testing.assert_allclose(load_model(tmp_path / "m").score(pooled), model.score(pooled), rtol=1e-6)


def test_pack_command_writes_an_int8_copy_and_rejects_a_missing_model(tmp_path, capsys):
    from sppdet.cli import main

    model = make_model("fc7", dim=300, hidden=64)
    save_model(tmp_path / "m", model)
    main(["pack", str(tmp_path / "m"), str(tmp_path / "p")])
    assert "int8" in capsys.readouterr().out
    packed = load_model(tmp_path / "p")
    assert packed.config["weights_storage"] == "int8" and packed.fc is not None
    pooled = np.random.default_rng(0).uniform(0, 3, (8, 300)).astype(np.float32)
    ref = model.score(pooled)
    assert np.abs(packed.score(pooled) - ref).max() < 5e-2 * np.abs(ref).max()  # three rounded layers
    with pytest.raises(SystemExit) as exit_info:
        main(["pack", str(tmp_path / "nowhere"), str(tmp_path / "q")])
    assert exit_info.value.code == 1 and "does not exist" in capsys.readouterr().err


def test_pack_with_fc6_rank_stores_the_truncated_svd_of_fc6(tmp_path):
    from sppdet.models.pack import pack_model

    model = make_model("fc7", dim=300, hidden=64)
    save_model(tmp_path / "m", model)
    pack_model(tmp_path / "m", tmp_path / "p", "float16", fc6_rank=16)
    packed = load_model(tmp_path / "p")
    assert packed.config["fc6_rank"] == 16 and packed.fc.fc6.weight.shape == (64, 300)
    w = model.fc.fc6.weight.detach().numpy().astype(np.float64)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    ref = (u[:, :16] * s[:16]) @ vt[:16]
    got = packed.fc.fc6.weight.detach().numpy()
    assert np.linalg.norm(got - ref) < 1e-2 * np.linalg.norm(ref)
    assert np.linalg.matrix_rank(got, tol=1e-3 * s[0]) == 16
    save_model(tmp_path / "pool", make_model("pool"))
    with pytest.raises(Exception, match="fc7 models only"):
        pack_model(tmp_path / "pool", tmp_path / "q", fc6_rank=16)
    with pytest.raises(Exception, match="only used with an fc6 rank"):
        pack_model(tmp_path / "m", tmp_path / "q", calibration=(tmp_path / "f", tmp_path / "p"))

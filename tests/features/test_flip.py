"""Left-right mirrored training copies: box mirroring against a pixel-mask brute force and
the mirrored maps `extract --flip` caches (fine-tuning on them: tests/heads/test_conv_finetune.py)."""

from __future__ import annotations

import json
import numpy as np
import pytest
import torch

from sppdet.boxes import mirror_boxes
from sppdet.data import VOCDataset
from sppdet.features import FeatureCache, FeatureExtractor, get_backbone
from tests.features.test_cache import run_extract, write_proposals


def _mask(box: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pixels covered by an integer internal box [x1, x2) x [y1, y2)."""
    m = np.zeros((h, w), bool)
    x1, y1, x2, y2 = box.astype(int)
    m[y1:y2, x1:x2] = True
    return m


def _box_of(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


def test_mirrored_boxes_cover_the_mirrored_pixels():
    rng = np.random.default_rng(0)
    h, w = 23, 37
    for _ in range(200):
        x1, x2 = np.sort(rng.choice(w + 1, 2, replace=False))
        y1, y2 = np.sort(rng.choice(h + 1, 2, replace=False))
        box = np.array([x1, y1, x2, y2], float)
        want = _box_of(_mask(box, h, w)[:, ::-1])
        np.testing.assert_array_equal(mirror_boxes(box[None], w)[0], want)
    boxes = rng.uniform(0, 30, (10, 4))
    np.testing.assert_allclose(mirror_boxes(mirror_boxes(boxes, w), w), boxes, atol=1e-12)  # an involution
    # by hand: the VOC box (1, 1, 10, 5) of a 100-wide image is internal (0, 0, 10, 5),
    # mirrored (90, 0, 100, 5), VOC (91, 1, 100, 5).
    np.testing.assert_array_equal(mirror_boxes(np.array([[0, 0, 10, 5]]), 100), [[90, 0, 100, 5]])


def test_extract_flip_caches_the_maps_of_the_mirrored_image(make_voc, tmp_path):
    root = make_voc(n_images=2)
    props = write_proposals(tmp_path / "props", root)
    out = tmp_path / "features"
    common = ["--voc", str(root), "--proposals", str(props), "--out", str(out), "--backbone", "zf5",
              "--weights", "random", "--scales", "64,96", "--device", "cpu", "--json"]
    plain = run_extract(*common, "--limit", "1")
    assert plain.exit_code == 0, plain.output
    first = run_extract(*common, "--flip")  # adds the mirrored maps of image 0 and all of image 1
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output)
    assert (summary["extracted"], summary["maps_written"], summary["flipped"]) == (2, 3, True)
    cache = FeatureCache(out)
    assert cache.image_ids() == ["000000", "000001"]  # the mirrored files are not images of their own
    ds = VOCDataset(root, split="train")
    extractor = FeatureExtractor(get_backbone("zf5", "random"), (64, 96), device="cpu")
    for image_id in ds.ids:
        mirrored = np.ascontiguousarray(ds.load_image(image_id)[:, ::-1])
        want = extractor.conv_maps(mirrored)
        got = cache.load_maps(image_id, flipped=True)
        for a, b in zip(got.maps, want.maps):
            torch.testing.assert_close(a.float(), b.half().float())
        np.testing.assert_array_equal(got.factors, want.factors)
        assert not torch.equal(got.maps[0], cache.load_maps(image_id).maps[0])
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    again = run_extract(*common, "--flip")
    assert json.loads(again.output)["maps_written"] == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    # A damaged mirrored file is reported and recomputed.
    cache.path("000001", flipped=True).write_bytes(b"")
    repaired = json.loads(run_extract(*common, "--flip").stdout)
    assert repaired["maps_written"] == 1 and "flipped" in repaired["damaged"][0]
    assert cache.problem("000001", flipped=True) is None

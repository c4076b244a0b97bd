"""The proposal cache: meta.json, atomic per-image files, parameter check, reading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from proposals import CacheMismatchError, CacheMissingError, ProposalCache, ProposalError, Proposals

PARAMS = {"method": "ss-fast", "max_boxes": 2000, "min_side": 10.0, "sizes": (1, 2)}


def _props(n: int = 5, seed: int = 0) -> Proposals:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 50, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], axis=1).astype(np.float32)
    return Proposals(boxes=boxes, scores=np.linspace(1, 0.1, n).astype(np.float32))


def test_round_trip_and_layout(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "ss-fast", PARAMS)
    p = _props()
    path = cache.save("000005", p, (120, 160))
    assert path == tmp_path / "c" / "000005.npz"
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta == {"format": 1, "method": "ss-fast", "params": {**PARAMS, "sizes": [1, 2]}}
    with np.load(path) as data:  # the contract readers rely on
        assert data["boxes"].dtype == np.float32 and data["scores"].dtype == np.float32
        np.testing.assert_array_equal(data["image_hw"], [120, 160])
    reader = ProposalCache(tmp_path / "c")
    np.testing.assert_array_equal(reader.load("000005"), p.boxes)
    np.testing.assert_array_equal(reader.load_proposals("000005").scores, p.scores)
    assert reader.ids() == ["000005"] and reader.has("000005") and not reader.has("000006")
    assert reader.method == "ss-fast" and reader.params["max_boxes"] == 2000
    assert not list((tmp_path / "c").glob(".*"))  # no temporary file left behind


def test_empty_proposals_round_trip(tmp_path):
    cache = ProposalCache.create(tmp_path, "m", {})
    cache.save("a", Proposals(np.zeros((0, 4), np.float32), np.zeros(0, np.float32)), (5, 5))
    assert cache.load("a").shape == (0, 4)


def test_same_params_reopen_and_mismatch_is_refused(tmp_path):
    ProposalCache.create(tmp_path, "ss-fast", PARAMS).save("x", _props(), (10, 10))
    ProposalCache.create(tmp_path, "ss-fast", dict(reversed(list(PARAMS.items()))))  # same, reordered
    with pytest.raises(CacheMismatchError, match=r"max_boxes: 2000 there, 500 asked"):
        ProposalCache.create(tmp_path, "ss-fast", {**PARAMS, "max_boxes": 500})
    with pytest.raises(CacheMismatchError, match=r"method 'ss-fast' there, 'edgeboxes' asked"):
        ProposalCache.create(tmp_path, "edgeboxes", PARAMS)
    with pytest.raises(CacheMismatchError, match=r"extra: None there, 1 asked"):
        ProposalCache.create(tmp_path, "ss-fast", {**PARAMS, "extra": 1})
    assert json.loads((tmp_path / "meta.json").read_text())["params"]["max_boxes"] == 2000


def test_npz_without_meta_is_refused(tmp_path):
    (tmp_path / "a.npz").write_bytes(b"")
    with pytest.raises(CacheMismatchError, match="no meta.json"):
        ProposalCache.create(tmp_path, "ss-fast", PARAMS)


def test_stale_temporary_files_are_removed_and_ignored(tmp_path):
    cache = ProposalCache.create(tmp_path, "ss-fast", PARAMS)
    stale = tmp_path / ".000001.npz.abc123.tmp"
    stale.write_bytes(b"half written")
    assert cache.ids() == []
    ProposalCache.create(tmp_path, "ss-fast", PARAMS)
    assert not stale.exists()


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    cache = ProposalCache.create(tmp_path, "ss-fast", PARAMS)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        cache.save("a", _props(), (10, 10))
    assert not cache.has("a") and sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]


def test_reader_errors_are_clear(tmp_path):
    with pytest.raises(CacheMissingError, match="meta.json missing"):
        ProposalCache(tmp_path / "nothing").load("a")
    cache = ProposalCache.create(tmp_path / "c", "ss-fast", PARAMS)
    with pytest.raises(CacheMissingError, match=r"no proposals for image 'zz'"):
        cache.load("zz")
    (tmp_path / "c" / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ProposalError, match="bad.npz: unreadable proposal file"):
        cache.load("bad")
    with pytest.raises(ProposalError, match="invalid image id"):
        cache.path("../etc")
    (tmp_path / "c" / "meta.json").write_text(json.dumps({"format": 99, "method": "m", "params": {}}))
    with pytest.raises(ProposalError, match="unknown format 99"):
        ProposalCache(tmp_path / "c").load("a")

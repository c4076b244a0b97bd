"""Running a method over many image files: resume, failures, workers, determinism."""

from __future__ import annotations

import os

import numpy as np
import pytest

from proposals import (CacheMismatchError, CommonOptions, ProposalCache, ProposalError,
                       create_method, run_proposals)
from proposals.images import read_image
from tests.proposals._synthetic import write_images

COMMON = CommonOptions(max_boxes=300, min_side=4)


def _npz_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.npz"))}


def test_run_resume_and_corrupt_image(tmp_path):
    items = write_images(tmp_path / "img", 5, corrupt=(2,))
    method = create_method("ss-fast", COMMON)
    out = tmp_path / "out"

    # A "partial" first run (as if interrupted after two images).
    first = run_proposals(method, items[:2], out, workers=1, progress=False)
    assert (first.done, first.skipped, first.failed) == (2, 0, [])
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}

    second = run_proposals(method, items, out, workers=1, progress=False)
    assert (second.total, second.done, second.skipped) == (5, 2, 2)
    assert len(second.failed) == 1
    image_id, reason = second.failed[0]
    assert image_id == "img002" and "img002.png: cannot decode image" in reason
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")
            if p.name in mtimes} == mtimes  # finished files were not redone
    assert ProposalCache(out).ids() == ["img000", "img001", "img003", "img004"]

    # The resumed cache equals one computed in a single fresh run, with 2 workers.
    fresh = run_proposals(method, items, tmp_path / "fresh", workers=2, progress=False)
    assert fresh.done == 4 and len(fresh.failed) == 1
    assert _npz_bytes(out).keys() == _npz_bytes(tmp_path / "fresh").keys()
    for name in _npz_bytes(out):
        a, b = np.load(out / name), np.load(tmp_path / "fresh" / name)
        for key in ("boxes", "scores", "image_hw"):
            np.testing.assert_array_equal(a[key], b[key])

    # Each cached file holds what the method gives for that image.
    direct = method(read_image(items[3][1]))
    np.testing.assert_array_equal(ProposalCache(out).load("img003"), direct.boxes)


def test_mismatched_parameters_are_refused_before_any_work(tmp_path):
    items = write_images(tmp_path / "img", 2)
    out = tmp_path / "out"
    run_proposals(create_method("ss-fast", COMMON), items[:1], out, workers=1, progress=False)
    other = create_method("ss-fast", CommonOptions(max_boxes=100, min_side=4))
    with pytest.raises(CacheMismatchError, match="max_boxes: 300 there, 100 asked"):
        run_proposals(other, items, out, workers=1, progress=False)
    with pytest.raises(CacheMismatchError, match="method 'ss-fast' there, 'edgeboxes' asked"):
        run_proposals(create_method("edgeboxes", COMMON), items, out, workers=1, progress=False)
    assert ProposalCache(out).ids() == ["img000"]


def test_missing_file_and_duplicate_ids(tmp_path):
    method = create_method("edgeboxes", COMMON)
    summary = run_proposals(method, [("gone", tmp_path / "gone.jpg")], tmp_path / "o", workers=1,
                            progress=False)
    assert summary.failed == [("gone", f"{tmp_path / 'gone.jpg'}: image file not found")]
    assert summary.to_dict()["failures"][0]["image_id"] == "gone"
    with pytest.raises(ProposalError, match="duplicate image ids: a"):
        run_proposals(method, [("a", "x.jpg"), ("a", "y.jpg")], tmp_path / "o2", workers=1)


def test_default_workers_is_the_core_count(tmp_path, monkeypatch):
    seen = {}
    import proposals.runner as runner

    def fake_outcomes(method, cache, todo, workers):
        seen["workers"] = workers
        return iter(())

    monkeypatch.setattr(runner, "_outcomes", fake_outcomes)
    run_proposals(create_method("ss-fast"), [], tmp_path / "o", progress=False)
    assert seen["workers"] == (os.cpu_count() or 1)

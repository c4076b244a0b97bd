"""``sppdet.compute_proposals``: the library function behind `sppdet proposals`."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sppdet
from proposals import CommonOptions, ProposalCache, create_method
from proposals.images import read_image
from sppdet.data import VOCDataset
from sppdet.errors import ArgumentError, ConfigMismatchError


def test_caches_every_image_as_the_method_proposes_and_resumes(make_voc, tmp_path):
    root = make_voc(n_images=3)
    dataset = VOCDataset(root, split="train")
    out = tmp_path / "props"
    summary = sppdet.compute_proposals(dataset, out, method="edgeboxes", max_boxes=40, min_side=4,
                                       workers=1, progress=False)
    assert (summary["total"], summary["done"], summary["skipped"], summary["failed"]) == (3, 3, 0, 0)
    assert summary["method"] == "edgeboxes" and summary["params"]["max_boxes"] == 40
    assert summary["params"]["edges"] == "sobel-canny-fallback"
    # What the summary says is what last_run.json says (less the method's parameters).
    last = json.loads((out / "last_run.json").read_text())
    assert last == {k: v for k, v in summary.items() if k != "params"}
    # Each cached file holds the boxes the method gives that image, computed here directly.
    reference = create_method("edgeboxes", CommonOptions(max_boxes=40, min_side=4))
    cache = ProposalCache(out)
    assert cache.ids() == ["000000", "000001", "000002"]
    for image_id in cache.ids():
        expected = reference(read_image(root / "JPEGImages" / f"{image_id}.jpg")).boxes
        np.testing.assert_allclose(cache.load(image_id), expected, atol=1e-4)
    again = sppdet.compute_proposals(dataset, out, method="edgeboxes", max_boxes=40, min_side=4,
                                     workers=1, progress=False)
    assert (again["done"], again["skipped"]) == (0, 3)


def test_failures_are_listed_not_raised_and_settings_are_checked(make_voc, tmp_path):
    root = make_voc(n_images=2)
    (root / "JPEGImages" / "000001.jpg").write_bytes(b"not a jpeg")
    dataset = VOCDataset(root, split="train")
    out = tmp_path / "props"
    summary = sppdet.compute_proposals(dataset, out, workers=1, progress=False)
    assert summary["method"] == "ss-fast" and summary["done"] == 1 and summary["failed"] == 1
    assert summary["failures"][0]["image_id"] == "000001"
    assert "cannot decode image" in summary["failures"][0]["reason"]
    with pytest.raises(ConfigMismatchError, match="max_boxes: 2000 there, 100 asked"):
        sppdet.compute_proposals(dataset, out, max_boxes=100, workers=1, progress=False)
    with pytest.raises(ArgumentError, match="edge_model"):
        sppdet.compute_proposals(dataset, tmp_path / "x", method="ss-fast", edge_model="m.yml.gz")
    with pytest.raises(ArgumentError, match="max_boxes must be >= 1"):
        sppdet.compute_proposals(dataset, tmp_path / "y", max_boxes=0)
    with pytest.raises(ArgumentError, match="unknown proposal method 'nope'"):
        sppdet.compute_proposals(dataset, tmp_path / "z", method="nope")

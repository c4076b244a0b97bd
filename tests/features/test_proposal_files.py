"""sppdet reads proposal caches through proposals.ProposalCache, with DataError messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sppdet.errors import DataError
from sppdet.features.proposal_files import ProposalFiles, load_proposals, read_proposal_meta


def test_reads_the_cache_and_names_the_file_on_errors(tmp_path):
    with pytest.raises(DataError, match="meta.json missing"):
        read_proposal_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": 1, "method": "ss-fast", "params": {}}))
    boxes = np.array([[1, 2, 30, 40], [0, 0, 5, 5]], np.float32)
    np.savez(tmp_path / "a.npz", boxes=boxes, scores=np.ones(2, np.float32))
    files = ProposalFiles(tmp_path)
    assert files.meta["method"] == "ss-fast" and files.has("a") and not files.has("b")
    np.testing.assert_array_equal(load_proposals(tmp_path, "a"), boxes)
    with pytest.raises(DataError, match=r"b.npz: no proposals for image 'b'"):
        files.load("b")
    (tmp_path / "c.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="c.npz: unreadable proposal file"):
        files.load("c")
    (tmp_path / "meta.json").write_text(json.dumps({"format": 1, "params": {}}))
    with pytest.raises(DataError, match=r"meta.json: key 'method': must be a method name"):
        ProposalFiles(tmp_path).meta

"""Damaged cache files: found on resume by a cheap check, reported by name, recomputed;
reading one gives a clear error naming it (never the Ctrl-C message); leftovers of killed
runs are removed; two processes creating one cache with other settings cannot both win."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from proposals.npz_files import npz_problem
from sppdet.errors import ConfigMismatchError, DataError
from sppdet.features import FeatureCache
from sppdet.fileio import remove_stale_temporaries
from tests.features.test_cache import CONFIG, fake_maps, write_proposals

DAMAGES = {
    "empty": lambda b: b"",
    "truncated": lambda b: b[: len(b) // 2],
    "cut_near_end": lambda b: b[:-10],
    "garbage": lambda b: b"\x00" * len(b),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_feature_file_is_detected_and_read_clearly(tmp_path, damage):
    cache = FeatureCache.create(tmp_path / "fc", CONFIG)
    path = cache.save("a", fake_maps())
    assert cache.problem("a") is None
    path.write_bytes(DAMAGES[damage](path.read_bytes()))
    assert cache.problem("a")  # a reason, not None
    with pytest.raises(DataError, match=r"fc/a\.npz: unreadable cache file, damaged.*extract"):
        cache.load_maps("a")


def test_missing_array_is_a_problem(tmp_path):
    np.savez(tmp_path / "x.npz", boxes=np.zeros((1, 4)))
    assert npz_problem(tmp_path / "x.npz", ["boxes"]) is None
    assert npz_problem(tmp_path / "x.npz", ["boxes", "scores"]) == "array 'scores' missing"


def _extract(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sppdet", "extract", *args], capture_output=True, text=True)


def test_extract_recomputes_damaged_files_and_cleans_leftovers(make_voc, tmp_path):
    root = make_voc(n_images=3)
    props = write_proposals(tmp_path / "props", root)
    out, fresh = tmp_path / "features", tmp_path / "fresh"
    common = ["--voc", str(root), "--proposals", str(props), "--backbone", "zf5", "--weights",
              "random", "--scales", "64", "--device", "cpu", "--json"]
    assert _extract(*common, "--out", str(out)).returncode == 0
    (out / "000000.npz").write_bytes(b"")                                   # zero bytes
    (out / "000001.npz").write_bytes((out / "000001.npz").read_bytes()[:-100])  # cut short
    leftover = out / ".000002.npz.999999-abcd1234.tmp"                        # a killed run's
    leftover.write_bytes(b"partial")
    r = _extract(*common, "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["extracted"], summary["already_cached"]) == (2, 1)
    assert [d.split(":")[0] for d in summary["damaged"]] == [str(out / "000000.npz"), str(out / "000001.npz")]
    assert "000000.npz: empty file" in r.stderr and not leftover.exists()
    assert _extract(*common, "--out", str(fresh)).returncode == 0
    for name in ("000000.npz", "000001.npz", "000002.npz"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes()


def test_cli_reading_a_damaged_file_is_one_line_not_interrupted(make_voc, tmp_path):
    """Train-svm on a cache with a zero-byte file: before, click took numpy's EOFError for
    Ctrl-D and printed the Ctrl-C message."""
    root = make_voc(n_images=2)
    props = write_proposals(tmp_path / "props", root)
    feats = tmp_path / "features"
    assert _extract("--voc", str(root), "--proposals", str(props), "--backbone", "zf5", "--weights",
                    "random", "--scales", "64", "--device", "cpu", "--out", str(feats)).returncode == 0
    (feats / "000001.npz").write_bytes(b"")
    (props / "000000.npz").write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "sppdet", "train-svm", "--voc", str(root), "--features",
                        str(feats), "--proposals", str(props), "--out", str(tmp_path / "m"),
                        "--quiet", "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "Interrupted" not in r.stderr and "Traceback" not in r.stderr
    assert "000000.npz: unreadable proposal file, damaged" in r.stderr or "000001.npz: unreadable cache file, damaged" in r.stderr


def test_stale_temporaries_of_dead_writers_only(tmp_path):
    (tmp_path / ".a.npz.999999-x.tmp").write_text("dead writer")
    (tmp_path / f".b.npz.{os.getpid()}-y.tmp").write_text("a live writer (this process)")
    (tmp_path / ".c.npz.nopid.tmp").write_text("an older version's name")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".a.npz.999999-x.tmp", ".c.npz.nopid.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == [f".b.npz.{os.getpid()}-y.tmp"]


_CREATE = """
import sys, time
from sppdet.features import FeatureCache
from tests.features.test_cache import CONFIG
config = dict(CONFIG, scales=[int(sys.argv[2])])
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
try:
    FeatureCache.create(sys.argv[1], config)
    print("created")
except Exception as e:
    print(type(e).__name__)
"""


def test_concurrent_creates_with_other_settings_do_not_both_succeed(tmp_path):
    import time

    start = time.time() + 3.0  # both processes start creating at the same moment
    procs = [subprocess.Popen([sys.executable, "-c", _CREATE, str(tmp_path / "fc"), str(s), str(start)],
                              stdout=subprocess.PIPE, text=True) for s in (64, 96)]
    outcomes = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert outcomes == ["ConfigMismatchError", "created"]
    assert len(list((tmp_path / "fc").iterdir())) == 1  # manifest.json only


def test_reopening_with_other_settings_is_refused(tmp_path):
    FeatureCache.create(tmp_path / "fc", CONFIG)
    with pytest.raises(ConfigMismatchError):
        FeatureCache.create(tmp_path / "fc", dict(CONFIG, scales=[64]))

"""kill -9 in the middle of extract, finetune and train-svm, then the same command again:
the result equals an uninterrupted run's, byte for byte. (proposals: a killed worker and a
killed parent are in tests/proposals/test_proposals_reliability.py.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.heads.test_heads_cli import caches  # noqa: F401 - the fixture (tiny VOC set, caches)

SPPDET = [sys.executable, "-m", "sppdet"]


def _kill_when(args: list[str], ready, done: Path, timeout: float = 300) -> bool:
    """Start ``args``; SIGKILL it as soon as ``ready()``. False if it finished first."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()
    proc.wait(timeout=60)
    return not done.exists()


def _run(args: list[str]) -> None:
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _npz_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.npz"))}


def test_extract_killed_then_resumed(caches):  # noqa: F811
    tmp, common = caches
    voc, props = common[common.index("--voc") + 1], common[common.index("--proposals") + 1]
    args = [*SPPDET, "extract", "--voc", voc, "--classes", str(tmp / "classes.txt"), "--proposals",
            props, "--backbone", "zf5", "--weights", "random", "--scales", "96", "--device", "cpu",
            "--threads", "1", "--out"]
    out, fresh = tmp / "k9_feats", tmp / "k9_feats_fresh"
    killed = _kill_when([*args, str(out)], lambda: len(list(out.glob("*.npz"))) >= 2,
                        out / "000011.npz")
    _run([*args, str(out)])
    _run([*args, str(fresh)])
    assert _npz_files(out) == _npz_files(fresh) and len(_npz_files(out)) == 12
    assert not list(out.glob(".*.tmp"))
    if not killed:
        pytest.skip("extract finished before it could be killed (results compared anyway)")


def test_finetune_killed_then_resumed(caches):  # noqa: F811
    tmp, common = caches
    args = [*SPPDET, "finetune", *common, "--hidden", "16", "--iterations", "600", "--lr-step", "400",
            "--batch-size", "16", "--fg-per-image", "4", "--bg-per-image", "8",
            "--checkpoint-every", "20", "--out"]
    out, fresh = tmp / "k9_ft", tmp / "k9_ft_fresh"
    killed = _kill_when([*args, str(out)], lambda: (out / "finetune.ckpt.npz").exists(), out / "fc.npz")
    _run([*args, str(out)])
    _run([*args, str(fresh)])
    assert (out / "fc.npz").read_bytes() == (fresh / "fc.npz").read_bytes()
    assert not (out / "finetune.ckpt.npz").exists()
    if not killed:
        pytest.skip("finetune finished before it could be killed (results compared anyway)")


def test_train_svm_killed_then_resumed(caches):  # noqa: F811
    tmp, common = caches
    args = [*SPPDET, "train-svm", *common, "--retrain-every", "3", "--checkpoint-every", "2", "--out"]
    out, fresh = tmp / "k9_svm", tmp / "k9_svm_fresh"
    mining = out / ".train-svm-checkpoint" / "mining.npz"
    killed = _kill_when([*args, str(out)], mining.exists, out / "config.json")
    _run([*args, str(out)])
    _run([*args, str(fresh)])
    assert (out / "heads.npz").read_bytes() == (fresh / "heads.npz").read_bytes()
    assert not (out / ".train-svm-checkpoint").exists()
    if not killed:
        pytest.skip("train-svm finished before it could be killed (results compared anyway)")

"""Faults during a proposals run: a worker killed mid-run ends the run with a clear error
naming the images left (no hang), and the rerun completes the same cache as an
uninterrupted run, byte for byte."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from proposals import ProposalCache, WorkerDiedError, run_proposals
from tests.proposals._dying import KILL_VALUE, DyingMethod
from tests.proposals._synthetic import synthetic_image


def _write(folder, n, killer):
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        img = synthetic_image(seed=i)[0]
        if i == killer:
            img[0, 0] = KILL_VALUE
        path = folder / f"img{i:03d}.png"
        cv2.imwrite(str(path), img)
        items.append((f"img{i:03d}", path))
    return items


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fail instead of hanging (the old runner waited forever for a dead worker)."""
    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s: the run hangs")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.npz"))}


def test_dead_worker_ends_the_run_and_the_rerun_resumes(tmp_path):
    items = _write(tmp_path / "img", 8, killer=3)
    out = tmp_path / "out"
    with _deadline(60), pytest.raises(WorkerDiedError) as info:
        run_proposals(DyingMethod(), items, out, workers=2, progress=False)
    message = str(info.value)
    assert "worker process died" in message and "img003" in message and "run the same command" in message
    done = set(ProposalCache(out).ids())
    assert "img003" not in done and len(done) < 8
    left = [i for i, _ in items if i not in done]
    assert f"{len(left)} images were not done: {', '.join(left)}" in message

    summary = run_proposals(DyingMethod(kill=False), items, out, workers=2, progress=False)
    assert (summary.done, summary.skipped, summary.failed) == (len(left), len(done), [])
    fresh = run_proposals(DyingMethod(kill=False), items, tmp_path / "fresh", workers=2, progress=False)
    assert fresh.done == 8
    assert _files(out) == _files(tmp_path / "fresh") and len(_files(out)) == 8
    assert not list(out.glob(".*.tmp"))


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_parent_killed_with_sigkill_workers_exit_and_rerun_equals_fresh_run(make_voc, tmp_path):
    root = make_voc(n_images=20)
    out = tmp_path / "props"
    args = [sys.executable, "-m", "sppdet", "proposals", "--no-progress", "--voc", str(root),
            "--method", "ss-fast", "--workers", "2", "--out"]
    proc = subprocess.Popen([*args, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(list(out.glob("*.npz"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    workers = _children(proc.pid)
    proc.kill()
    proc.communicate(timeout=30)
    if len(list(out.glob("*.npz"))) == 20:
        pytest.skip("the run finished before it could be killed")
    end = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < end:
        time.sleep(0.1)
    assert workers and not any(_alive(w) for w in workers), "orphaned workers kept running"
    # A killed run may leave temporary files; the rerun finishes the cache and removes them.
    r = subprocess.run([*args, str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    fresh = subprocess.run([*args, str(tmp_path / "fresh")], capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    assert _files(out) == _files(tmp_path / "fresh") and len(_files(out)) == 20
    assert not list(out.glob(".*.tmp"))


def test_damaged_cache_files_are_reported_and_recomputed(tmp_path):
    from proposals import ProposalError

    items = _write(tmp_path / "img", 4, killer=-1)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    run_proposals(DyingMethod(kill=False), items, out, workers=1, progress=False)
    (out / "img000.npz").write_bytes(b"")
    (out / "img001.npz").write_bytes((out / "img001.npz").read_bytes()[:-30])
    with pytest.raises(ProposalError, match=r"img000\.npz: unreadable proposal file, damaged"):
        ProposalCache(out).load("img000")
    with pytest.raises(ProposalError, match=r"img001\.npz: unreadable proposal file, damaged"):
        ProposalCache(out).load("img001")
    summary = run_proposals(DyingMethod(kill=False), items, out, workers=1, progress=False)
    assert (summary.done, summary.skipped) == (2, 2)
    assert summary.damaged == [("img000", f"{out / 'img000.npz'}: empty file"),
                               ("img001", summary.damaged[1][1])]
    assert summary.damaged[1][1].startswith(f"{out / 'img001.npz'}: not a complete .npz file")
    assert summary.to_dict()["damaged"][0]["image_id"] == "img000"
    run_proposals(DyingMethod(kill=False), items, fresh, workers=1, progress=False)
    assert _files(out) == _files(fresh)


def test_proposals_of_another_image_size_are_refused(tmp_path, make_voc):
    import numpy as np

    from proposals import ProposalError, Proposals
    from sppdet.data import VOCDataset
    from sppdet.errors import DataError
    from sppdet.features.proposal_files import ProposalFiles
    from sppdet.heads.sources import DatasetImages

    cache = ProposalCache.create(tmp_path / "p", "fixture", {})
    boxes = np.array([[0, 0, 10, 10]], np.float32)
    cache.save("000000", Proposals(boxes, np.ones(1, np.float32)), (120, 160))
    cache.save("000001", Proposals(boxes, np.ones(1, np.float32)), (100, 150))
    np.testing.assert_array_equal(cache.load("000000", image_hw=(120, 160)), boxes)
    with pytest.raises(ProposalError, match=r"000001\.npz: proposals of a 150x100 image .* is 160x120"):
        cache.load("000001", image_hw=(120, 160))
    root = make_voc(n_images=2)  # both images 160x120 in their annotations
    images = DatasetImages(VOCDataset(root, split="train", classes=("cat", "dog")),
                           ProposalFiles(tmp_path / "p"))
    assert images[0].image_id == "000000"
    with pytest.raises(DataError, match="proposals of a 150x100 image"):
        images[1]

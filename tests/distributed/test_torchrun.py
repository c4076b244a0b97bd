"""`torchrun --nproc-per-node 2` (gloo, loopback) over 8 real VOC images: proposals and
extract write the same bytes as one process, also when a run started with another number
of processes is resumed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sppdet(*args: str, ranks: int = 1) -> str:
    """Run the CLI in a new process, under torchrun when ``ranks`` > 1; return stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo"}
    if ranks > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "sppdet", *args]
    else:
        cmd = [sys.executable, "-m", "sppdet", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(args)}\n{r.stdout}\n{r.stderr[-3000:]}"
    return r.stdout


def same_files(a: Path, b: Path, names: tuple[str, ...]) -> None:
    files = sorted(p.name for p in a.glob("*.npz"))
    assert files == sorted(p.name for p in b.glob("*.npz")) and len(files) == 8
    for name in (*files, *names):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert not list(b.glob(".*.tmp"))


def test_two_ranks_write_what_one_process_writes(voc2007_root, torch_home, tmp_path):
    t = tmp_path
    data = ["--voc", str(voc2007_root), "--split", "train"]
    props = ["--method", "edgeboxes", "--max-boxes", "100", "--workers", "1", "--no-progress"]
    feats = ["--backbone", "mobilenet_v2", "--scales", "224", "--device", "cpu", "--threads", "1"]
    sppdet("proposals", *data, "--limit", "8", *props, "--out", str(t / "p1"))
    sppdet("extract", *data, "--limit", "8", "--proposals", str(t / "p1"), "--out", str(t / "f1"), *feats)

    # proposals: one process stops after 3 images (and leaves a temporary file, as a kill
    # would); two ranks finish the other 5.
    sppdet("proposals", *data, "--limit", "3", *props, "--out", str(t / "p2"))
    (t / "p2" / ".000099.npz.abc.tmp").write_bytes(b"half")
    out = sppdet("proposals", *data, "--limit", "8", *props, "--out", str(t / "p2"), ranks=2)
    assert "8 images: 5 done, 3 skipped" in out
    same_files(t / "p1", t / "p2", ("meta.json",))

    # extract: two ranks stop after 5 images; one process finishes the other 3.
    out = sppdet("extract", *data, "--limit", "5", "--proposals", str(t / "p2"), "--out", str(t / "f2"),
                 *feats, ranks=2)
    assert "5 images extracted, 0 already cached" in out and "2 ranks" in out
    out = sppdet("extract", *data, "--limit", "8", "--proposals", str(t / "p2"), "--out", str(t / "f2"), *feats)
    assert "3 images extracted, 5 already cached" in out
    same_files(t / "f1", t / "f2", ("manifest.json",))

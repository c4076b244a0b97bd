"""``sppdet proposals`` end to end on tiny synthetic VOC sets, and on two real images."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from proposals import ProposalCache, create_method
from tests.proposals._synthetic import brute_iou


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sppdet", "proposals", "--no-progress", *args],
                          capture_output=True, text=True)


def test_command_caches_resumes_and_refuses_other_settings(make_voc, tmp_path):
    root = make_voc(n_images=3)
    out = tmp_path / "props"
    base = ("--voc", str(root), "--split", "train", "--method", "ss-fast", "--out", str(out))
    r = run_cli(*base, "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "3 images: 3 done, 0 skipped" in r.stdout
    cache = ProposalCache(out)
    assert cache.ids() == ["000000", "000001", "000002"] and cache.method == "ss-fast"
    boxes = cache.load("000001")
    assert boxes.shape[1] == 4 and len(boxes) > 0
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 160).all() and (boxes[:, 3] <= 120).all()

    r = run_cli(*base, "--workers", "1")
    assert r.returncode == 0 and "0 done, 3 skipped" in r.stdout

    r = run_cli(*base, "--max-boxes", "100")
    assert r.returncode == 1
    assert "Error:" in r.stderr and "max_boxes: 2000 there, 100 asked" in r.stderr
    assert "Traceback" not in r.stderr


def test_corrupt_image_is_reported_and_the_rest_go_on(make_voc, tmp_path):
    root = make_voc(n_images=3)
    (root / "JPEGImages" / "000001.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    out = tmp_path / "props"
    r = run_cli("--voc", str(root), "--method", "edgeboxes", "--out", str(out), "--workers", "1")
    assert r.returncode == 1, r.stdout
    assert "2 done, 0 skipped (already cached), 1 failed" in r.stdout
    assert "failed 000001:" in r.stdout and "000001.jpg: cannot decode image" in r.stdout
    assert "1 of 3 images failed" in r.stderr and "Traceback" not in r.stderr
    assert "Sobel-Canny fallback" in r.stdout
    assert ProposalCache(out).ids() == ["000000", "000002"]
    last = json.loads((out / "last_run.json").read_text())
    assert last["failed"] == 1 and last["failures"][0]["image_id"] == "000001"
    assert ProposalCache(out).params["edges"] == "sobel-canny-fallback"


def test_ids_limit_and_option_errors(make_voc, tmp_path):
    root = make_voc(n_images=4)
    ids = tmp_path / "ids.txt"
    ids.write_text("000003\n000001\n")
    r = run_cli("--voc", str(root), "--ids", str(ids), "--method", "ss-fast", "--out",
                str(tmp_path / "a"), "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert ProposalCache(tmp_path / "a").ids() == ["000001", "000003"]
    r = run_cli("--voc", str(root), "--limit", "1", "--method", "ss-fast", "--out",
                str(tmp_path / "b"), "--workers", "1")
    assert r.returncode == 0 and ProposalCache(tmp_path / "b").ids() == ["000000"]
    r = run_cli("--voc", str(root), "--method", "ss-fast", "--out", str(tmp_path / "c"),
                "--edge-model", "m.yml.gz")
    assert r.returncode == 2 and "--edge-model applies to --method edgeboxes only" in r.stderr
    r = run_cli("--voc", str(root), "--method", "edgeboxes", "--out", str(tmp_path / "d"),
                "--edge-model", str(tmp_path / "missing.yml.gz"))
    assert r.returncode == 1 and "structured edge model not found" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ss-fast", "edgeboxes"])
def test_two_real_images(voc2007_root, name):
    from sppdet.data import VOCDataset

    ds = VOCDataset(voc2007_root, split="train", ids=["000012", "000017"])
    method = create_method(name)
    for image_id in ds.ids:
        ann, image = ds.annotation(image_id), ds.load_image(image_id)
        p = method(image)
        again = method(image.copy())
        np.testing.assert_array_equal(p.boxes, again.boxes)  # deterministic
        assert 500 <= len(p) <= 2000
        assert (p.boxes[:, :2] >= 0).all()
        assert (p.boxes[:, 2] <= ann.width).all() and (p.boxes[:, 3] <= ann.height).all()
        gt = ann.boxes[~ann.difficult]
        assert (brute_iou(gt, p.boxes.astype(float)).max(axis=1) >= 0.5).all()


def test_interrupted_run_keeps_whole_files_and_resumes(make_voc, tmp_path):
    import signal
    import time

    root = make_voc(n_images=16)
    out = tmp_path / "props"
    args = [sys.executable, "-m", "sppdet", "proposals", "--no-progress", "--voc", str(root),
            "--method", "ss-fast", "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob("*.npz")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before it could be interrupted")
    assert proc.returncode == 130, stderr
    finished = ProposalCache(out).ids()
    assert 1 <= len(finished) < 16
    for image_id in finished:  # every file under its final name is complete
        assert ProposalCache(out).load(image_id).shape[1] == 4
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{16 - len(finished)} done, {len(finished)} skipped" in r.stdout
    assert len(ProposalCache(out).ids()) == 16 and not list(out.glob(".*.tmp"))

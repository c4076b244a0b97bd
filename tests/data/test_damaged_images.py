"""Damaged images are refused everywhere, with the same reader: data sets (extract, eval),
detect, proposals; an image that does not have its annotation's size too."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from sppdet.data import VOCDataset
from sppdet.errors import DataError


def _truncate(path, fraction=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_dataset_refuses_truncated_and_missized_images(make_voc):
    root = make_voc(n_images=3)
    ds = VOCDataset(root, split="train", classes=("cat", "dog"))
    assert ds.load_image("000000").shape == (120, 160, 3)
    assert ds.annotated_size("000000") == (160, 120)
    _truncate(root / "JPEGImages" / "000001.jpg")
    assert cv2.imread(str(root / "JPEGImages" / "000001.jpg")) is not None  # imread took it
    with pytest.raises(DataError, match=r"000001\.jpg: cannot decode image: truncated"):
        ds.load_image("000001")
    small = np.zeros((100, 150, 3), np.uint8)
    cv2.imwrite(str(root / "JPEGImages" / "000002.jpg"), small)
    with pytest.raises(DataError, match=r"000002\.jpg: the image is 150x100 .* annotation says 160x120"):
        ds.load_image("000002")


def test_proposals_and_detect_refuse_a_truncated_image(make_voc, tmp_path, torch_home):
    root = make_voc(n_images=2)
    _truncate(root / "JPEGImages" / "000001.jpg")
    run = [sys.executable, "-m", "sppdet"]
    r = subprocess.run([*run, "proposals", "--voc", str(root), "--method", "ss-fast", "--workers", "1",
                        "--out", str(tmp_path / "p"), "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 1 and "000001.jpg: cannot decode image: truncated" in r.stdout + r.stderr
    r = subprocess.run([*run, "detect", str(root / "JPEGImages" / "000001.jpg")],  # the shipped model
                       capture_output=True, text=True)
    assert r.returncode == 1 and "000001.jpg: cannot decode image: truncated" in r.stderr
    assert "Traceback" not in r.stderr and "0 detections" not in r.stdout


@pytest.mark.parametrize("content, message", [
    (b"000001\n\xff\xfe000002\n", r"ids\.txt: line 2: not UTF-8 text"),
    (b"000001\n000002\n000001\n", r"ids\.txt: line 3: image id '000001' is listed twice \(first at line 1\)"),
    (b"000001\n../../etc/passwd\n", r"ids\.txt: line 2: invalid image id '\.\./\.\./etc/passwd'"),
    (b"sub/000001\n", r"line 1: invalid image id"),
    (b".hidden\n", r"line 1: invalid image id"),
    (b"# only a comment\n\n", r"ids\.txt: id list is empty"),
])
def test_id_lists_are_validated(tmp_path, content, message):
    from sppdet.data import read_id_list

    path = tmp_path / "ids.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_id_list(path)


def test_id_list_with_bom_and_columns_reads(tmp_path, make_voc):
    from sppdet.data import read_id_list

    path = tmp_path / "ids.txt"
    path.write_bytes("\ufeff000001  1\n000002 -1\n".encode())
    assert read_id_list(path) == ["000001", "000002"]
    with pytest.raises(DataError, match="listed twice"):
        VOCDataset(make_voc(n_images=2), ids=["000000", "000000"])

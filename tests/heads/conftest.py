"""Head tests train tiny networks: one torch thread is much faster for them than two
threads competing on a shared 2-core machine. Also the tiny VOC set with proposal files
that the command-line tests of the heads train on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

CLASSES = ("cat", "dog")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_proposals(folder: Path, root: Path, rng: np.random.Generator) -> None:
    """Jittered copies of the ground truth plus random boxes, in the cache format."""
    from sppdet.data import VOCDataset

    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"method": "fixture", "params": {}, "format": 1}))
    ds = VOCDataset(root, split="train", classes=CLASSES)
    for image_id in ds.ids:
        gt = ds.annotation(image_id).boxes
        jit = np.repeat(gt, 10, axis=0) + rng.uniform(-8, 8, (10 * len(gt), 4))
        xy = rng.uniform(0, 100, (30, 2))
        boxes = np.concatenate([jit, np.concatenate([xy, xy + rng.uniform(10, 60, (30, 2))], 1)])
        boxes = np.clip(boxes, 0, [160, 120, 160, 120]).astype(np.float32)
        np.savez(folder / f"{image_id}.npz", boxes=boxes, scores=np.zeros(len(boxes), np.float32))


def write_rect_voc(tmp: Path, n_images: int) -> tuple[Path, list[str]]:
    """A VOC year folder ``tmp/VOC2007`` of ``n_images`` 160 x 120 images with one drawn
    rectangle each (cat, dog, cat, ...), ``tmp/classes.txt`` and proposal files in
    ``tmp/props``; returns the folder and the data options (--voc, --classes)."""
    import cv2

    from tests.conftest import write_voc_xml

    root = tmp / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = [f"{k:06d}" for k in range(n_images)]
    for k, image_id in enumerate(ids):
        image = rng.integers(0, 60, (120, 160, 3), dtype=np.uint8)
        x1, y1 = int(rng.integers(5, 60)), int(rng.integers(5, 40))
        x2, y2 = x1 + int(rng.integers(40, 90)), y1 + int(rng.integers(30, 70))
        cv2.rectangle(image, (x1 - 1, y1 - 1), (x2 - 1, y2 - 1), (200, 40 + 180 * (k % 2), 60), -1)
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), image)
        write_voc_xml(root / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", 160, 120,
                      [(CLASSES[k % 2], (x1, y1, x2, y2), 0)])
    (root / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    (tmp / "classes.txt").write_text("cat\ndog\n")
    write_proposals(tmp / "props", root, rng)
    return root, ["--voc", str(root), "--classes", str(tmp / "classes.txt")]

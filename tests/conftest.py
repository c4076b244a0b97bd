"""Shared fixtures: the real data beside the project, and tiny synthetic VOC data sets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPPDET_SHARED", REPO.parent / "shared")).resolve()
VOC2007 = SHARED / "data" / "VOCdevkit" / "VOC2007"
BCCD = SHARED / "data" / "BCCD"
WEIGHTS = SHARED / "weights"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (../shared is absent on this machine)")
    return path


@pytest.fixture(scope="session")
def voc2007_root() -> Path:
    """../shared/data/VOCdevkit/VOC2007, or skip."""
    return _require(VOC2007)


@pytest.fixture(scope="session")
def bccd_root() -> Path:
    """../shared/data/BCCD, or skip."""
    return _require(BCCD)


@pytest.fixture(scope="session")
def torch_home() -> Path:
    """../shared/weights as TORCH_HOME (MobileNetV2 ImageNet weights), or skip."""
    path = _require(WEIGHTS / "hub" / "checkpoints")
    os.environ["TORCH_HOME"] = str(WEIGHTS)
    return path


def write_voc_xml(path: Path, filename: str, width: int, height: int,
                  objects: list[tuple[str, tuple[float, float, float, float], int]],
                  with_size: bool = True) -> None:
    """Write a VOC annotation; objects are (name, (xmin, ymin, xmax, ymax), difficult)."""
    parts = [f"<annotation><filename>{filename}</filename>"]
    if with_size:
        parts.append(f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>")
    for name, (x1, y1, x2, y2), difficult in objects:
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
                     f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
                     f"</bndbox></object>")
    parts.append("</annotation>")
    path.write_text("".join(parts))


@pytest.fixture
def make_voc(tmp_path: Path) -> Callable[..., Path]:
    """Factory for a tiny synthetic VOC data set with drawn rectangles as objects.

    ``make_voc(n_images=3, classes=("cat", "dog"))`` returns the year folder; split ``train``
    lists every image. Image k has one object of class ``classes[k % len(classes)]``.
    """
    import cv2

    def make(n_images: int = 3, classes: tuple[str, ...] = ("cat", "dog"),
             size: tuple[int, int] = (160, 120), seed: int = 0) -> Path:
        root = tmp_path / "VOCdevkit" / "VOC2007"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        width, height = size
        ids = []
        for k in range(n_images):
            image_id = f"{k:06d}"
            ids.append(image_id)
            image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
            x1, y1 = int(rng.integers(5, width // 3)), int(rng.integers(5, height // 3))
            x2, y2 = int(x1 + rng.integers(width // 4, width // 2)), int(y1 + rng.integers(height // 4, height // 2))
            color = (40 + 200 * (k % 2), 200, 255 - 200 * (k % 2))
            cv2.rectangle(image, (x1 - 1, y1 - 1), (x2 - 1, y2 - 1), color, thickness=-1)
            cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), image)
            write_voc_xml(root / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", width, height,
                          [(classes[k % len(classes)], (x1, y1, x2, y2), 0)])
        (root / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{i}\n" for i in ids))
        return root

    return make


def run(*args: str) -> int:
    """Run the ``sppdet`` command line in this process; its exit status."""
    from sppdet.cli import main

    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0

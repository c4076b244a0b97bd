"""Image reading for the proposal methods (the package never imports sppdet; atomic
writes are in ``proposals.atomic``)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from proposals.errors import ImageReadError


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as HxWx3 uint8 BGR, or raise ``ImageReadError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"{path}: cannot decode image (corrupt, truncated or not an image)")
    return image

"""The images ``sppdet.Detector`` accepts: a file path, a PIL image, or a numpy array."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from sppdet.errors import ArgumentError, DataError

COLOR_ORDERS = ("rgb", "bgr")


def to_bgr(image: Any, color: str = "rgb") -> tuple[np.ndarray, str]:
    """An image as the (H, W, 3) uint8 BGR array the detector works on, and its source.

    Args:
        image: a path (str or ``os.PathLike``) of an image file; a PIL image (any mode,
            converted to RGB); or a uint8 numpy array (H, W, 3) in the order ``color``,
            (H, W, 4) with alpha (dropped), or (H, W) grey.
        color: channel order of a numpy array: ``"rgb"`` (PIL, scikit-image, imageio,
            matplotlib; the default) or ``"bgr"`` (OpenCV's ``cv2.imread``). Ignored for
            paths and PIL images, whose order is known.

    Returns:
        ``(bgr, source)``: a C-contiguous (H, W, 3) uint8 BGR array and the file path as a
        string ('' for arrays and PIL images).

    Raises:
        DataError: an unreadable file, or an array of another shape or dtype.
    """
    if color not in COLOR_ORDERS:
        raise ArgumentError(f"color must be one of {COLOR_ORDERS}, got {color!r}")
    if isinstance(image, (str, os.PathLike)):
        from sppdet.data.voc import read_image

        return read_image(image), os.fspath(image)
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image (PIL not imported)
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1]), ""
    if not isinstance(image, np.ndarray):
        raise DataError(f"cannot detect in a {type(image).__name__}: give a file path, a PIL "
                        "image or a numpy array")
    if image.dtype != np.uint8:
        raise DataError(f"image array has dtype {image.dtype}; expected uint8 (0..255), e.g. "
                        "(array * 255).round().astype(np.uint8) for floats in [0, 1]")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DataError(f"image array has shape {image.shape}; expected (H, W, 3), (H, W, 4) "
                        "or (H, W)")
    image = image[:, :, :3]
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise DataError(f"image array has shape {image.shape}: no pixels")
    if color == "rgb":
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image), ""

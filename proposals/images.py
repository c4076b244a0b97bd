"""The one image reader of the toolkit (``proposals``, ``sppdet extract``, ``detect``,
``eval`` and the Python API all read image files here).

``read_image(path, expected_size)`` returns an HxWx3 uint8 BGR array, or raises
``ImageReadError`` naming the file when it cannot be decoded *completely*:

- JPEG: the marker structure is walked (segments, the scans' entropy-coded data, which may
  hold only stuffed bytes and restart markers), and the end-of-image marker must follow
  the last scan; a truncated file, or one with foreign bytes in its coded data, is
  refused. OpenCV's ``imread`` would return such an image with grey or garbled parts.
- PNG: every chunk's CRC is checked and the file must end with ``IEND``.
- Every format: OpenCV must decode it, to the size its header states.

The EXIF orientation of a JPEG is applied, as image viewers do (so a photo taken upright
is upright), and ``expected_size`` (width, height), e.g. an annotation's ``<size>``, must
then match the decoded image. Damage that keeps a valid stream (a flipped bit inside the
coded data of a JPEG, which has no checksum) cannot be detected.

Only OpenCV, numpy and the standard library are used (``proposals`` never imports sppdet).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from proposals.errors import ImageReadError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Markers that may follow a scan's coded data in a (progressive) JPEG, besides EOI.
_BETWEEN_SCANS = {0xC4, 0xCC, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xFE, *range(0xE0, 0xF0)}
_SOF = {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)}


def _be16(data: bytes, i: int) -> int:
    return (data[i] << 8) | data[i + 1]


def _exif_orientation(payload: bytes) -> int:
    """The orientation tag (1..8) of an APP1 Exif payload; 1 when absent or unreadable."""
    if not payload.startswith(b"Exif\x00\x00") or len(payload) < 14:
        return 1
    tiff = payload[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return 1
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for k in range(count):
            tag, typ, _, value = struct.unpack_from(order + "HHIH", tiff, ifd + 2 + 12 * k)
            if tag == 0x0112 and typ == 3:
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def check_jpeg(data: bytes) -> tuple[int, int, int]:
    """Walk a JPEG's structure: (width, height, EXIF orientation), or ValueError saying why
    the file is truncated or damaged."""
    n = len(data)
    arr = np.frombuffer(data, np.uint8)
    ff = np.flatnonzero(arr[:-1] == 0xFF)
    nxt = arr[ff + 1]
    # Inside coded data: 0xFF00 (a stuffed 0xFF), restart markers, and 0xFF fill bytes.
    marker_at = ff[~((nxt == 0) | ((nxt >= 0xD0) & (nxt <= 0xD7)) | (nxt == 0xFF))]
    size = None
    orientation, scans, i = 1, 0, 2
    while True:
        if i + 2 > n:
            raise ValueError("truncated: it ends before the end-of-image marker")
        if data[i] != 0xFF:
            raise ValueError(f"damaged: no marker at byte {i}")
        m = data[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m == 0xD9:
            if size is None or scans == 0:
                raise ValueError("damaged: end-of-image marker before any image data")
            return size[0], size[1], orientation
        if m in _SOF or m in _BETWEEN_SCANS:
            if i + 4 > n:
                raise ValueError("truncated inside a header segment")
            end = i + 2 + _be16(data, i + 2)
            if end > n or end < i + 4:
                raise ValueError(f"truncated or damaged segment at byte {i}")
            if m in _SOF:
                if end < i + 9:
                    raise ValueError("damaged frame header")
                size = (_be16(data, i + 7), _be16(data, i + 5))
            elif m == 0xE1 and orientation == 1:
                orientation = _exif_orientation(data[i + 4:end])
            if m == 0xDA:  # a scan: coded data up to the next real marker
                if size is None:
                    raise ValueError("damaged: image data before the frame header")
                scans += 1
                k = int(np.searchsorted(marker_at, end))
                if k == len(marker_at):
                    raise ValueError("truncated: it ends inside the image data, before the "
                                     "end-of-image marker")
                i = int(marker_at[k])
                if data[i + 1] != 0xD9 and data[i + 1] not in _BETWEEN_SCANS:
                    raise ValueError(f"damaged: foreign bytes in the image data (byte {i})")
            else:
                i = end
            continue
        raise ValueError(f"damaged: unexpected marker 0x{m:02X} at byte {i}")


def check_png(data: bytes) -> tuple[int, int]:
    """Check every chunk's CRC and the final IEND: (width, height), or ValueError."""
    i, n, size = 8, len(data), None
    while True:
        if i + 12 > n:
            raise ValueError("truncated: it ends before the IEND chunk")
        (length,) = struct.unpack_from(">I", data, i)
        kind = data[i + 4:i + 8]
        end = i + 12 + length
        if end > n:
            raise ValueError(f"truncated inside chunk {kind!r}")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(data[i + 4:end - 4]) != crc:
            raise ValueError(f"damaged: checksum mismatch in chunk {kind.decode('latin-1')!r}")
        if kind == b"IHDR" and length >= 8:
            size = struct.unpack_from(">II", data, i + 8)
        if kind == b"IEND":
            if size is None:
                raise ValueError("damaged: no IHDR chunk")
            return int(size[0]), int(size[1])
        i = end


def decode_image(data: bytes, where: str = "image",
                 expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode the bytes of an image file (see the module docstring); ``where`` names it in
    errors."""
    if not data:
        raise ImageReadError(f"{where}: empty file, not an image")
    header: tuple[int, int] | None = None
    swap = False
    try:
        if data[:2] == b"\xff\xd8":
            w, h, orientation = check_jpeg(data)
            header, swap = (w, h), orientation >= 5  # orientations 5-8 turn the image 90 degrees
        elif data[:8] == PNG_SIGNATURE:
            header = check_png(data)
    except ValueError as e:
        raise ImageReadError(f"{where}: cannot decode image: {e} (corrupt or incompletely "
                             f"copied file)") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageReadError(f"{where}: cannot decode image (corrupt, truncated or not an image)")
    h, w = image.shape[:2]
    if header is not None and (w, h) != (header[::-1] if swap else header):
        raise ImageReadError(f"{where}: cannot decode image: decoded to {w}x{h}, but its header "
                             f"says {header[0]}x{header[1]} (damaged file)")
    if expected_size is not None and (w, h) != tuple(expected_size):
        raise ImageReadError(
            f"{where}: the image is {w}x{h} (width x height{', after its EXIF rotation' if swap else ''})"
            f" but its annotation says {expected_size[0]}x{expected_size[1]}; the boxes would "
            f"not fit it (wrong image file, or an annotation made for another size)")
    return image


def read_image(path: str | os.PathLike, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file completely as HxWx3 uint8 BGR (EXIF orientation applied), or raise
    ``ImageReadError`` naming the file; ``expected_size`` (width, height) must match."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from None
    return decode_image(data, str(path), expected_size)

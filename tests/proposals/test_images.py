"""The one image reader: truncated and damaged files are refused (OpenCV's imread would
return them with grey or garbled parts), the EXIF orientation is applied, and an expected
size (an annotation's) is checked."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from proposals.errors import ImageReadError
from proposals.images import check_jpeg, read_image
from tests.proposals._synthetic import synthetic_image


def _jpeg(progressive: bool = False) -> bytes:
    img = synthetic_image(seed=3, height=120, width=160)[0]
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_RST_INTERVAL, 2] if progressive else []
    return cv2.imencode(".jpg", img, params)[1].tobytes()


def _exif_app1(orientation: int) -> bytes:
    """An APP1 segment with a big-endian TIFF IFD holding only the orientation tag."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("progressive", [False, True])
def test_whole_files_read_like_opencv(tmp_path, progressive):
    data = _jpeg(progressive)
    path = _write(tmp_path, "a.jpg", data)
    np.testing.assert_array_equal(read_image(path), cv2.imread(str(path)))
    assert check_jpeg(data) == (160, 120, 1)
    png = _write(tmp_path, "a.png", cv2.imencode(".png", synthetic_image()[0])[1].tobytes())
    np.testing.assert_array_equal(read_image(png), synthetic_image()[0])
    bmp = _write(tmp_path, "a.bmp", cv2.imencode(".bmp", synthetic_image()[0])[1].tobytes())
    np.testing.assert_array_equal(read_image(bmp), synthetic_image()[0])


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("fraction", [0.3, 0.7, 0.95, 0.999])
def test_truncated_jpeg_is_refused(tmp_path, fraction, progressive):
    data = _jpeg(progressive)
    path = _write(tmp_path, "t.jpg", data[: int(len(data) * fraction)])
    assert cv2.imread(str(path)) is not None  # what extract/eval/detect used to accept
    with pytest.raises(ImageReadError, match=r"t\.jpg: cannot decode image: truncated"):
        read_image(path)


def test_foreign_bytes_in_jpeg_data_are_refused(tmp_path):
    data = bytearray(_jpeg())
    rng = np.random.default_rng(0)
    middle = len(data) // 2
    data[middle:middle + 400] = rng.integers(0, 256, 400, dtype=np.uint8).tobytes()
    path = _write(tmp_path, "c.jpg", bytes(data))
    assert cv2.imread(str(path)) is not None
    with pytest.raises(ImageReadError, match=r"c\.jpg: cannot decode image: damaged"):
        read_image(path)
    header = bytearray(_jpeg())
    header[2:40] = b"\x00" * 38
    with pytest.raises(ImageReadError, match="cannot decode image"):
        read_image(_write(tmp_path, "h.jpg", bytes(header)))


def test_damaged_png_is_refused(tmp_path):
    data = cv2.imencode(".png", synthetic_image()[0])[1].tobytes()
    with pytest.raises(ImageReadError, match="cannot decode image: truncated"):
        read_image(_write(tmp_path, "t.png", data[:-20]))
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    with pytest.raises(ImageReadError, match="checksum mismatch in chunk 'IDAT'"):
        read_image(_write(tmp_path, "f.png", bytes(flipped)))
    for name, content in (("empty.jpg", b""), ("text.jpg", b"hello")):
        with pytest.raises(ImageReadError, match=f"{name}: .*(empty file|cannot decode)"):
            read_image(_write(tmp_path, name, content))


def test_exif_orientation_is_applied_and_sizes_are_checked(tmp_path):
    data = _jpeg()
    plain = read_image(_write(tmp_path, "p.jpg", data))
    rotated = read_image(_write(tmp_path, "r.jpg", data[:2] + _exif_app1(6) + data[2:]))
    # EXIF orientation 6: the stored image is shown turned 90 degrees clockwise.
    np.testing.assert_array_equal(rotated, np.ascontiguousarray(np.rot90(plain, k=-1)))
    assert read_image(tmp_path / "r.jpg", expected_size=(120, 160)).shape == (160, 120, 3)
    with pytest.raises(ImageReadError, match=r"r\.jpg: the image is 120x160 .*EXIF.* annotation says 160x120"):
        read_image(tmp_path / "r.jpg", expected_size=(160, 120))
    with pytest.raises(ImageReadError, match="annotation says 100x120"):
        read_image(tmp_path / "p.jpg", expected_size=(100, 120))
    with pytest.raises(ImageReadError, match="image file not found"):
        read_image(tmp_path / "gone.jpg")


def test_the_toolkit_has_one_image_reader():
    """sppdet reads images through proposals.images only (no cv2.imread/imdecode elsewhere)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    users = [str(p.relative_to(root)) for pkg in ("sppdet", "proposals") for p in (root / pkg).rglob("*.py")
             if any(f in p.read_text() for f in ("cv2.imread(", "cv2.imdecode(", "Image.open("))]
    assert users == ["proposals/images.py"]

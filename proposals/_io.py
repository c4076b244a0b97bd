"""Tiny file helpers: atomic writes and image reading (the package never imports sppdet)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from proposals.errors import ImageReadError

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``; on success rename it onto ``path``,
    on failure delete it. Readers never see a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Atomically write an uncompressed .npz file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write pretty-printed JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


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

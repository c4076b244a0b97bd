"""Read the proposal cache (format in the project's proposal-cache contract).

``DIR/meta.json`` ({"method", "params", "format"}) and ``DIR/<image_id>.npz`` with
``boxes`` (N, 4) float32 internal boxes in original pixels. Uses
``proposals.cache.ProposalCache`` where that module exists, else reads the files directly.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from sppdet.errors import DataError
from sppdet.fileio import load_json


def read_proposal_meta(directory: str | Path) -> dict[str, Any]:
    """The proposals' meta.json (method and parameters), or a DataError naming the file."""
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise DataError(f"{directory}: not a proposals folder (no meta.json); run the proposals command first")
    try:
        meta = load_json(path)
    except ValueError as e:
        raise DataError(f"{path}: unreadable JSON ({e})") from e
    if not isinstance(meta, dict) or "method" not in meta:
        raise DataError(f"{path}: no 'method' entry")
    return meta


def proposal_path(directory: str | Path, image_id: str) -> Path:
    return Path(directory) / f"{image_id}.npz"


def load_proposals(directory: str | Path, image_id: str) -> np.ndarray:
    """(N, 4) float32 internal boxes of one image."""
    try:
        from proposals.cache import ProposalCache  # type: ignore[import-not-found]
    except ImportError:
        ProposalCache = None
    if ProposalCache is not None:
        return np.asarray(ProposalCache(directory).load(image_id), dtype=np.float32).reshape(-1, 4)
    path = proposal_path(directory, image_id)
    if not path.is_file():
        raise DataError(f"{path}: no proposals for image {image_id!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            boxes = np.asarray(data["boxes"], dtype=np.float32)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: unreadable proposals file ({e})") from e
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"{path}: boxes have shape {boxes.shape}, expected (N, 4)")
    return boxes

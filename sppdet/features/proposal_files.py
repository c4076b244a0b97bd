"""Read the proposal cache from sppdet: ``proposals.ProposalCache`` (the one reader of the
format), with its errors turned into ``DataError`` (file and reason, no traceback).

``DIR/meta.json`` ({"method", "params", "format"}) and ``DIR/<image_id>.npz`` with
``boxes`` (N, 4) float32 internal boxes in original pixels.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from proposals import ProposalCache, ProposalError
from sppdet.errors import DataError


@contextlib.contextmanager
def _as_data_error() -> Iterator[None]:
    try:
        yield
    except ProposalError as e:
        raise DataError(str(e)) from None


class ProposalFiles:
    """The proposals of a cache directory (a ``heads.sources.ProposalSource``)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.cache = ProposalCache(self.dir)

    @property
    def meta(self) -> dict[str, Any]:
        """meta.json: the method and its parameters."""
        with _as_data_error():
            meta = dict(self.cache.meta)
        if "method" not in meta:
            raise DataError(f"{self.dir / 'meta.json'}: no 'method' entry")
        return meta

    def path(self, image_id: str) -> Path:
        with _as_data_error():
            return self.cache.path(image_id)

    def has(self, image_id: str) -> bool:
        return self.path(image_id).is_file()

    checks_image_size = True  # ``load`` takes the image's size and checks it

    def load(self, image_id: str, image_hw: tuple[int, int] | None = None) -> np.ndarray:
        """(N, 4) float32 internal boxes of one image, best first; with ``image_hw``
        (height, width), proposals recorded for another image size are refused."""
        with _as_data_error():
            return np.asarray(self.cache.load(image_id, image_hw), dtype=np.float32).reshape(-1, 4)


def read_proposal_meta(directory: str | Path) -> dict[str, Any]:
    """The proposals' meta.json (method and parameters), or a DataError naming the file."""
    return ProposalFiles(directory).meta


def proposal_path(directory: str | Path, image_id: str) -> Path:
    return ProposalFiles(directory).path(image_id)


def load_proposals(directory: str | Path, image_id: str) -> np.ndarray:
    """(N, 4) float32 internal boxes of one image."""
    return ProposalFiles(directory).load(image_id)

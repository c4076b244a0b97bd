"""Checkpoints of ``train-svm``: an interrupted run resumes where it stopped.

Two files in the checkpoint folder, each written atomically:
- ``positives.npz`` after pass 1: feature scales and every class's positive features;
- ``mining.npz`` every few hundred images of pass 2: the next image, the SVMs, and the
  *keys* (image index, window row) of every cached negative and box-regression window,
  not their features. Resuming re-pools those windows from the feature cache, so a
  checkpoint stays small (megabytes) while the working set may be gigabytes.

Every file carries a fingerprint of the run's settings (parameters, classes, image ids,
fc layers, caches' settings); a checkpoint of another run is refused.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from sppdet.errors import DataError
from sppdet.fileio import save_npz
from sppdet.heads.sources import FeatureSource, TrainingImage

POSITIVES_FILE = "positives.npz"
MINING_FILE = "mining.npz"


def fingerprint(**parts: Any) -> str:
    """A stable hash of JSON-able settings; numpy arrays and bytes are hashed by content."""
    h = hashlib.sha256()
    for key in sorted(parts):
        value = parts[key]
        h.update(key.encode())
        if isinstance(value, np.ndarray):
            h.update(np.ascontiguousarray(value).tobytes())
        elif isinstance(value, bytes):
            h.update(value)
        else:
            h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()


class TrainCheckpoint:
    """Read and write the checkpoint files of one run (identified by ``fp``)."""

    def __init__(self, directory: str | Path, fp: str) -> None:
        self.dir = Path(directory)
        self.fp = fp

    def _load(self, name: str) -> dict[str, np.ndarray] | None:
        path = self.dir / name
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: unreadable checkpoint ({e}); delete it to start over") from None
        if str(arrays.get("fingerprint")) != self.fp:
            raise DataError(f"{path}: checkpoint of a run with other settings or data; "
                            f"delete {self.dir} to start over")
        return arrays

    def save(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        save_npz(self.dir / name, fingerprint=np.array(self.fp), **arrays)

    def load_positives(self) -> dict[str, np.ndarray] | None:
        return self._load(POSITIVES_FILE)

    def load_mining(self) -> dict[str, np.ndarray] | None:
        return self._load(MINING_FILE)

    def remove(self) -> None:
        for name in (POSITIVES_FILE, MINING_FILE):
            (self.dir / name).unlink(missing_ok=True)
        if self.dir.is_dir() and not any(self.dir.iterdir()):
            self.dir.rmdir()


def repool(images: Sequence[TrainingImage], source: FeatureSource,
           requests: Sequence[tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]],
           dtype: np.dtype = np.float16, progress: Callable | None = None) -> list[np.ndarray]:
    """Features of windows named by keys (n, 2) = (image index, window row).

    ``requests`` are (keys, transform) pairs; the answer holds, per request, the transformed
    pooled features in its keys' order. Each image is pooled once, for its named windows only.
    """
    keys = [np.asarray(k, np.int64).reshape(-1, 2) for k, _ in requests]
    allk = np.concatenate(keys) if keys else np.zeros((0, 2), np.int64)
    owner = np.concatenate([np.full(len(k), r) for r, k in enumerate(keys)]) if keys else np.zeros(0, int)
    out: list[np.ndarray | None] = [None] * len(requests)
    order = np.lexsort((allk[:, 1], allk[:, 0]))
    img_sorted = allk[order, 0]
    starts = np.flatnonzero(np.r_[True, img_sorted[1:] != img_sorted[:-1]]) if len(order) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(order)].astype(int)
    offsets = np.cumsum([0] + [len(k) for k in keys])
    spans = range(len(starts)) if progress is None else progress(range(len(starts)))
    for k in spans:
        members = order[starts[k]:ends[k]]  # positions in allk
        ti = images[int(allk[members[0], 0])]
        rows, inv = np.unique(allk[members, 1], return_inverse=True)
        pooled = source.pooled(ti.image_id, ti.windows()[rows])
        for r in np.unique(owner[members]):
            mine = owner[members] == r
            x = requests[r][1](pooled[inv.reshape(-1)[mine]])
            if out[r] is None:
                out[r] = np.empty((len(keys[r]), x.shape[1]), dtype)
            out[r][members[mine] - offsets[r]] = x
    return [np.zeros((0, 0), dtype) if o is None else o for o in out]

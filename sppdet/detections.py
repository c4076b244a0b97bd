"""Scored detections: the detector's output and the evaluation's input.

Two views of the same data:
- :class:`Detections` holds one image's boxes of all classes (what a detector yields);
- :class:`ClassDetections` holds one class's boxes over all images (what the VOC devkit
  ranks, and what one ``comp4_det_<split>_<class>.txt`` result file holds).

Boxes are internal (x1, y1, x2, y2) float boxes (see :mod:`sppdet.boxes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sppdet.errors import ArgumentError


def _as_boxes(boxes: np.ndarray, what: str) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ArgumentError(f"{what}: boxes must have shape (N, 4), got {b.shape}")
    return b


def _check_len(n: int, arr: np.ndarray, name: str, what: str) -> None:
    if arr.shape != (n,):
        raise ArgumentError(f"{what}: {name} must have shape ({n},), got {arr.shape}")


@dataclass(frozen=True)
class Detections:
    """One image's scored boxes: ``boxes`` (N, 4) internal, ``scores`` (N,), ``labels`` (N,)
    class indices into the data set's class list."""

    image_id: str
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        what = f"detections of image {self.image_id!r}"
        boxes = _as_boxes(self.boxes, what)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(self.labels).reshape(-1)
        if labels.size == 0:
            labels = labels.astype(np.int64)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ArgumentError(f"{what}: labels must be integers, got {labels.dtype}")
        _check_len(len(boxes), scores, "scores", what)
        _check_len(len(boxes), labels, "labels", what)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, image_id: str) -> Detections:
        return cls(image_id, np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class ClassDetections:
    """One class's scored boxes over a whole split, in no particular order:
    ``image_ids`` (M,) str, ``scores`` (M,), ``boxes`` (M, 4) internal."""

    image_ids: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    def __post_init__(self) -> None:
        what = "class detections"
        boxes = _as_boxes(self.boxes, what)
        ids = np.asarray(self.image_ids, dtype=str).reshape(-1)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        _check_len(len(boxes), ids, "image_ids", what)
        _check_len(len(boxes), scores, "scores", what)
        object.__setattr__(self, "image_ids", ids)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "boxes", boxes)

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> ClassDetections:
        return cls(np.zeros(0, dtype=str), np.zeros(0), np.zeros((0, 4)))


def group_by_class(
    detections: Iterable[Detections], class_names: Sequence[str]
) -> dict[str, ClassDetections]:
    """Regroup per-image detections into per-class detections (every class present, in
    ``class_names`` order; image order is kept, which fixes the order of equal scores)."""
    pieces: dict[int, tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]] = {
        k: ([], [], []) for k in range(len(class_names))
    }
    for det in detections:
        if len(det) == 0:
            continue
        bad = (det.labels < 0) | (det.labels >= len(class_names))
        if bad.any():
            raise ArgumentError(
                f"detections of image {det.image_id!r}: label {int(det.labels[bad][0])} "
                f"outside the {len(class_names)} classes"
            )
        for k in np.unique(det.labels):
            sel = det.labels == k
            ids, scores, boxes = pieces[int(k)]
            ids.append(np.full(int(sel.sum()), det.image_id, dtype=object))
            scores.append(det.scores[sel])
            boxes.append(det.boxes[sel])
    out: dict[str, ClassDetections] = {}
    for k, name in enumerate(class_names):
        ids, scores, boxes = pieces[k]
        if ids:
            out[name] = ClassDetections(
                np.concatenate(ids).astype(str), np.concatenate(scores), np.concatenate(boxes)
            )
        else:
            out[name] = ClassDetections.empty()
    return out

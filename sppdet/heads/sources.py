"""What head training reads: pooled features per window, and per-image training records.

Training never touches images: it needs, per image, the proposals, the ground truth, and
a way to pool conv features for any set of windows (the feature cache). Both are small
protocols here, so the trainers run on the real caches and on synthetic sources in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, Sequence, overload

import numpy as np

from sppdet.boxes import box_iou
from sppdet.errors import ConfigMismatchError


class FeatureSource(Protocol):
    """Pools conv features for windows of one image (``FeatureCache`` implements it)."""

    def pooled(self, image_id: str, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) internal boxes in original image pixels -> (N, D) float32 features."""
        ...


class ProposalSource(Protocol):
    """Per-image proposal boxes (``proposals.cache.ProposalCache`` implements it)."""

    def load(self, image_id: str) -> np.ndarray:
        """-> (N, 4) internal boxes in original image pixels."""
        ...


class AnnotatedDataset(Protocol):
    """The part of ``sppdet.data.VOCDataset`` that training uses."""

    ids: list[str]
    classes: tuple[str, ...]

    def annotation(self, image_id: str): ...  # -> sppdet.data.Annotation


@dataclass(frozen=True)
class TrainingImage:
    """Everything head training knows about one image (boxes in the internal convention)."""

    image_id: str
    proposals: np.ndarray  # (P, 4) float
    gt_boxes: np.ndarray  # (G, 4) float
    gt_labels: np.ndarray  # (G,) int64 class indices
    gt_difficult: np.ndarray  # (G,) bool

    def windows(self) -> np.ndarray:
        """All candidate windows: ground-truth boxes first, then proposals, (G + P, 4)."""
        return np.concatenate([np.asarray(self.gt_boxes, np.float64).reshape(-1, 4),
                               np.asarray(self.proposals, np.float64).reshape(-1, 4)])

    @property
    def num_gt(self) -> int:
        return len(self.gt_labels)


class DatasetImages(Sequence[TrainingImage]):
    """A lazy sequence of ``TrainingImage`` built from a data set and a proposal source.

    Each access reads one annotation and one proposal file, so passes over the data set
    keep only one image's records in memory.
    """

    def __init__(self, dataset: AnnotatedDataset, proposals: ProposalSource) -> None:
        self.dataset = dataset
        self.proposals = proposals
        self.ids = list(dataset.ids)

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, i: int) -> TrainingImage: ...
    @overload
    def __getitem__(self, i: slice) -> list[TrainingImage]: ...

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        image_id = self.ids[i]
        ann = self.dataset.annotation(image_id)
        if getattr(self.proposals, "checks_image_size", False):  # against the annotation's size
            props = self.proposals.load(image_id, image_hw=(ann.height, ann.width))
        else:
            props = self.proposals.load(image_id)
        props = np.asarray(props, dtype=np.float64).reshape(-1, 4)
        return TrainingImage(image_id, props, np.asarray(ann.boxes, np.float64).reshape(-1, 4),
                             np.asarray(ann.labels, np.int64), np.asarray(ann.difficult, bool))

    def __iter__(self) -> Iterator[TrainingImage]:
        for i in range(len(self)):
            yield self[i]


def class_overlaps(boxes: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                   num_classes: int) -> np.ndarray:
    """(N, C) max IoU of each box with the ground-truth boxes of each class (0 if none)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes), num_classes), dtype=np.float64)
    if len(gt_labels) == 0 or len(boxes) == 0:
        return out
    iou = box_iou(boxes, gt_boxes)  # (N, G)
    # Scatter-max over the ground-truth columns grouped by label.
    np.maximum.at(out.T, np.asarray(gt_labels, np.int64), iou.T)
    return out


def best_gt(boxes: np.ndarray, gt_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max IoU of each box over all ground-truth boxes, and the index of that box.

    With no ground truth: IoU 0 and index -1 everywhere.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(gt_boxes) == 0:
        return np.zeros(len(boxes)), np.full(len(boxes), -1, dtype=np.int64)
    iou = box_iou(boxes, gt_boxes)
    arg = iou.argmax(axis=1)
    return iou[np.arange(len(boxes)), arg], arg.astype(np.int64)


@dataclass
class OpenCaches:
    """The two caches head training reads, and their recorded settings."""

    features: FeatureSource
    proposals: ProposalSource
    features_manifest: dict
    proposals_meta: dict


def open_caches(features_dir: str | Path, proposals_dir: str | Path) -> OpenCaches:
    """Open the conv-feature cache and the proposal cache; check that the feature cache was
    built for this proposal method. ``features_manifest`` is the feature cache's config
    plus its SPP levels and config hash (what a model records and checks)."""
    from sppdet.features.cache import FeatureCache  # torch-heavy: imported when used
    from sppdet.features.proposal_files import ProposalFiles

    features = FeatureCache(features_dir)
    manifest = {**features.config, "levels": list(features.levels), "hash": features.hash}
    proposals = ProposalFiles(proposals_dir)
    meta = proposals.meta
    recorded = manifest.get("proposals")
    recorded_method = recorded.get("method") if isinstance(recorded, dict) else None
    if recorded_method is not None and meta.get("method") != recorded_method:
        raise ConfigMismatchError(
            f"{proposals_dir}: proposals made by {meta.get('method')!r}, but the feature cache "
            f"{features_dir} was built for {recorded_method!r} proposals")
    return OpenCaches(features, proposals, manifest, dict(meta))

"""Counts over a data set: images, objects, difficult objects, per class."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from sppdet.data.voc import VOCDataset


@dataclass
class DatasetStats:
    images: int = 0
    objects: int = 0
    difficult: int = 0
    truncated: int = 0
    images_without_objects: int = 0
    per_class: dict[str, dict[str, int]] = field(default_factory=dict)
    boxes_clipped: int = 0
    boxes_dropped: int = 0
    box_issues: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_stats(dataset: VOCDataset, progress: bool = True) -> DatasetStats:
    """Parse every annotation of ``dataset`` and count what it holds."""
    stats = DatasetStats(per_class={c: {"images": 0, "objects": 0, "difficult": 0}
                                    for c in dataset.classes})
    for image_id in tqdm(dataset.ids, desc="annotations", unit="img", disable=not progress,
                         leave=False):
        ann = dataset.annotation(image_id)
        stats.images += 1
        stats.objects += len(ann)
        stats.difficult += int(ann.difficult.sum())
        stats.truncated += int(ann.truncated.sum())
        stats.images_without_objects += int(len(ann) == 0)
        for k, name in enumerate(dataset.classes):
            mask = ann.labels == k
            if mask.any():
                row = stats.per_class[name]
                row["images"] += 1
                row["objects"] += int(mask.sum())
                row["difficult"] += int(np.sum(ann.difficult[mask]))
    for issue in dataset.box_issues:
        stats.boxes_clipped += issue.action == "clipped"
        stats.boxes_dropped += issue.action == "dropped"
        stats.box_issues.append(
            {"image": issue.image_id, "class": issue.class_name, "voc_box": list(issue.voc_box),
             "action": issue.action, "reason": issue.reason})
    return stats

"""What ``sppdet.Detector`` returns for one image: boxes, scores, labels and class names."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from sppdet.detections import Detections


class Detection(NamedTuple):
    """One detection: ``box`` (4,) x1, y1, x2, y2 in pixels, its score, label and class name."""

    box: np.ndarray
    score: float
    label: int
    class_name: str


@dataclass(frozen=True)
class DetectionResult:
    """The detections of one image, best first.

    Attributes:
        boxes: (N, 4) float64, ``(x1, y1, x2, y2)`` in the image's own pixels, continuous
            coordinates (a box covering pixel columns 0..9 has x1 = 0, x2 = 10).
        scores: (N,) float64 scores, higher is more confident: class probabilities for a
            softmax model (the default), SVM margins (not probabilities) for an SVM model.
        labels: (N,) int64 indices into ``classes``.
        classes: every class name the model knows, in label order.
        image_hw: the image's (height, width).
        source: the file the image came from ('' for an array or a PIL image).

    ``class_names`` gives each detection's class name; iterating yields :class:`Detection`
    tuples; ``to_dict()`` is the JSON form `sppdet detect --json` writes per image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    image_hw: tuple[int, int]
    source: str = ""

    @classmethod
    def from_detections(cls, dets: Detections, classes: Sequence[str], image_hw: tuple[int, int],
                        source: str = "") -> DetectionResult:
        """Wrap a detector's :class:`~sppdet.detections.Detections` (sorted by descending score)."""
        order = np.argsort(-dets.scores, kind="stable")
        return cls(dets.boxes[order], dets.scores[order], dets.labels[order], tuple(classes),
                   (int(image_hw[0]), int(image_hw[1])), source)

    @property
    def class_names(self) -> list[str]:
        """(N,) the class name of each detection."""
        return [self.classes[int(k)] for k in self.labels]

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[Detection]:
        for box, score, label in zip(self.boxes, self.scores, self.labels):
            yield Detection(box, float(score), int(label), self.classes[int(label)])

    def to_dict(self) -> dict[str, Any]:
        """``{"image", "width", "height", "detections": [{"class", "score", "box"}]}``
        (scores rounded to 4 decimals, box coordinates to 2)."""
        return {
            "image": self.source, "width": self.image_hw[1], "height": self.image_hw[0],
            "detections": [{"class": d.class_name, "score": round(d.score, 4),
                            "box": [round(float(v), 2) for v in d.box]} for d in self],
        }

    def __repr__(self) -> str:
        found = ", ".join(f"{d.class_name} {d.score:.2f}" for d in list(self)[:5])
        more = ", ..." if len(self) > 5 else ""
        return f"DetectionResult({len(self)} detections{': ' + found if found else ''}{more})"

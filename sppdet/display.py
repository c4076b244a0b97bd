"""Which detections to show a user: the score-threshold policy of `sppdet detect` and
``sppdet.Detector.load``.

Evaluation keeps every window scoring above the model's ``score_threshold``
(``defaults.SCORE_THRESHOLD``, the official SPP-net code's), which is right for ranking but
shows far too much. For display, a class's detections are kept above its F1-optimal
threshold chosen on a validation split (`sppdet eval --save-display-thresholds`, stored in
the model's config.json), else above the model's ``display_threshold``, else above
``defaults.DISPLAY_THRESHOLD``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from sppdet.defaults import DISPLAY_THRESHOLD as DEFAULT_DISPLAY_THRESHOLD

if TYPE_CHECKING:
    from sppdet.detector import DetectionParams
    from sppdet.heads.model_dir import DetectorModel


def display_thresholds(test: dict[str, Any], classes: Sequence[str],
                       score_thresh: float | None) -> tuple[float, tuple[float, ...] | None]:
    """(global threshold, per-class thresholds or None) for showing detections: ``score_thresh``
    when given; else the model's per-class display thresholds (a class without one gets the
    model's display_threshold); else the model's display_threshold or the default.

    Args:
        test: the ``test`` settings of a model's config.json.
        classes: the model's class names, in label order.
        score_thresh: an explicit threshold for every class, or None.
    """
    overall = float(test.get("display_threshold", DEFAULT_DISPLAY_THRESHOLD))
    if score_thresh is not None:
        return float(score_thresh), None
    per_class = test.get("display_thresholds")
    if not per_class:
        return overall, None
    return overall, tuple(float(per_class.get(c, overall)) for c in classes)


def display_params(model: DetectorModel, score_threshold: float | None = None,
                   nms_iou: float | None = None, max_per_image: int | None = None) -> DetectionParams:
    """The detection settings for showing ``model``'s detections (see the module docstring);
    ``None`` arguments take the model's values."""
    from sppdet.detector import DetectionParams

    threshold, per_class = display_thresholds(model.config.get("test", {}), model.classes,
                                              score_threshold)
    return DetectionParams.from_model(model, score_threshold=threshold, nms_iou=nms_iou,
                                      max_per_image=max_per_image, class_thresholds=per_class)

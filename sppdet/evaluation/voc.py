"""PASCAL VOC detection metrics, as the VOC 2007 devkit (``VOCevaldet.m``) computes them.

Rules (see ``shared/DESIGN.md``):
- IoU with the devkit's "+1" convention on 1-based inclusive boxes. Internal boxes are
  (xmin - 1, ymin - 1, xmax, ymax), and plain continuous IoU on them equals the devkit's
  "+1" IoU exactly (integer areas stay exact in float64, so an IoU of exactly 0.5 is 0.5).
- A class's detections over all images are ranked by descending score (stable: equal
  scores keep their input order, as MATLAB's ``sort`` does). Each detection is assigned to
  the ground-truth box of its image with the highest IoU (the first one on ties), even if
  that box is already taken. With IoU >= ``iou_thresh`` (0.5): a difficult box makes the
  detection neither TP nor FP; a box already matched makes it an FP (duplicate); otherwise
  a TP. Every other detection is an FP. Recall counts non-difficult boxes only.
- VOC 2007 AP: the mean over 11 recall thresholds t of the highest precision at recall
  >= t. The thresholds are MATLAB's ``0:0.1:1`` bit for bit (:data:`VOC07_RECALL_THRESHOLDS`):
  MATLAB builds the left half as ``k * 0.1``, so its fourth threshold is
  0.30000000000000004, and a recall of exactly 3/10 does not reach it.
- Area AP (VOC 2010 and later): the area under the monotone precision envelope.

Departures from the devkit, both at undefined points: where precision is 0/0 (only
difficult matches so far) the devkit has NaN and ignores it in ``max``; here it is 0, which
gives the same APs except when a class's detections all hit difficult boxes (devkit: NaN,
here 0). A class with no non-difficult ground truth has no defined AP: it gets NaN and is
left out of the mean (the devkit would report NaN for mAP).

The greedy matching is vectorised: a detection's state depends only on earlier detections
that chose the same ground-truth box, so the TPs are the first choosers of each box.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sppdet.boxes import box_iou
from sppdet.detections import ClassDetections
from sppdet.errors import ArgumentError, DataError


def _matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """MATLAB's ``start:step:stop`` for step > 0 (MathWorks' ``colonop`` algorithm)."""
    n = int(round((stop - start) / step))
    tol = 2.0 * np.finfo(float).eps * max(abs(start), abs(stop))
    if start + n * step - stop > tol:
        n -= 1
    last = start + n * step
    if last - stop > -tol:
        last = stop
    out = np.zeros(n + 1)
    k = np.arange(n // 2 + 1)
    out[k] = start + k * step
    out[n - k] = last - k * step
    if n % 2 == 0:
        out[n // 2] = (start + last) / 2
    return out


#: The devkit's ``for t=0:0.1:1`` (VOCevaldet.m), bit for bit.
VOC07_RECALL_THRESHOLDS: np.ndarray = _matlab_colon(0.0, 0.1, 1.0)


class AnnotationLike(Protocol):
    """What evaluation needs of a ground-truth record (``sppdet.data.Annotation`` fits)."""

    image_id: str
    boxes: np.ndarray  # (K, 4) internal
    labels: np.ndarray  # (K,) class indices
    difficult: np.ndarray  # (K,) bool


#: One class's ground truth: image id -> (boxes (K, 4) internal, difficult (K,) bool).
ClassGroundTruth = Mapping[str, tuple[np.ndarray, np.ndarray]]


def voc07_interpolated_precision(rec: np.ndarray, prec: np.ndarray) -> np.ndarray:
    """The 11 precisions VOC 2007 averages: at each threshold t of
    :data:`VOC07_RECALL_THRESHOLDS`, the highest precision at recall >= t (0 if none)."""
    rec = np.asarray(rec, dtype=np.float64).reshape(-1)
    prec = np.asarray(prec, dtype=np.float64).reshape(-1)
    if rec.size == 0:
        return np.zeros(len(VOC07_RECALL_THRESHOLDS))
    # Recall never decreases along the ranking, so "recall >= t" is a suffix of the ranks,
    # starting at the first rank that reaches t; its maximum is a suffix maximum.
    suffix_max = np.maximum.accumulate(prec[::-1])[::-1]
    first = np.searchsorted(rec, VOC07_RECALL_THRESHOLDS, side="left")
    return np.where(first < rec.size, suffix_max[np.minimum(first, rec.size - 1)], 0.0)


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool) -> float:
    """AP from a ranked list's recall and precision (``VOCevaldet.m`` / ``VOCap.m``).

    ``use_07_metric``: 11-point interpolated AP (VOC 2007); otherwise the area under the
    interpolated curve (VOC 2010 and later). Empty inputs (no detections) give 0.
    """
    rec = np.asarray(rec, dtype=np.float64).reshape(-1)
    prec = np.asarray(prec, dtype=np.float64).reshape(-1)
    if rec.shape != prec.shape:
        raise ArgumentError(f"rec and prec differ in shape: {rec.shape} vs {prec.shape}")
    if use_07_metric:
        return float(voc07_interpolated_precision(rec, prec).sum() / len(VOC07_RECALL_THRESHOLDS))
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


@dataclass(frozen=True)
class ClassEval:
    """One class's ranked-list evaluation.

    ``rec``/``prec``/``tp``/``fp`` are per rank (detections sorted by descending score);
    ``tp``/``fp`` are 0/1 flags (both 0 for a detection on a difficult box).
    """

    rec: np.ndarray
    prec: np.ndarray
    ap07: float
    ap_area: float
    npos: int
    tp: np.ndarray
    fp: np.ndarray

    @property
    def ndet(self) -> int:
        return len(self.tp)


def _match(
    detections: ClassDetections, ground_truth: ClassGroundTruth, iou_thresh: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Rank the detections and flag each as TP / FP (both 0: on a difficult box)."""
    order = np.argsort(-detections.scores, kind="stable")
    ids = detections.image_ids[order]
    boxes = detections.boxes[order]
    nd = len(order)

    gt_ids = list(ground_truth)
    gt_boxes = [np.asarray(ground_truth[i][0], dtype=np.float64).reshape(-1, 4) for i in gt_ids]
    gt_diff = [np.asarray(ground_truth[i][1], dtype=bool).reshape(-1) for i in gt_ids]
    for i, b, d in zip(gt_ids, gt_boxes, gt_diff):
        if len(b) != len(d):
            raise ArgumentError(f"image {i!r}: {len(b)} ground-truth boxes but {len(d)} difficult flags")
    counts = np.array([len(b) for b in gt_boxes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])[:-1]
    all_diff = np.concatenate(gt_diff) if gt_diff else np.zeros(0, dtype=bool)
    npos = int((~all_diff).sum())
    image_index = {img: k for k, img in enumerate(gt_ids)}

    ovmax = np.zeros(nd)
    jmax = np.full(nd, -1, dtype=np.int64)  # global index of the best ground-truth box
    if nd:
        uniq, inv = np.unique(ids, return_inverse=True)
        by_image = np.argsort(inv, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(inv, minlength=len(uniq)))])
        for u, img in enumerate(uniq):  # one vectorised IoU matrix per image
            k = image_index.get(str(img))
            if k is None or counts[k] == 0:
                continue
            sel = by_image[bounds[u] : bounds[u + 1]]
            iou = box_iou(boxes[sel], gt_boxes[k])
            best = iou.argmax(axis=1)  # first maximum, as the devkit's strict ">"
            ovmax[sel] = iou[np.arange(len(sel)), best]
            jmax[sel] = offsets[k] + best

    matched = (ovmax >= iou_thresh) & (jmax >= 0)
    on_difficult = np.zeros(nd, dtype=bool)
    on_difficult[matched] = all_diff[jmax[matched]]
    candidates = np.flatnonzero(matched & ~on_difficult)
    _, first = np.unique(jmax[candidates], return_index=True)
    tp = np.zeros(nd)
    tp[candidates[first]] = 1.0
    fp = np.where(on_difficult, 0.0, 1.0 - tp)
    return tp, fp, npos


def evaluate_class(
    detections: ClassDetections, ground_truth: ClassGroundTruth, iou_thresh: float = 0.5
) -> ClassEval:
    """Evaluate one class's detections against its ground truth, the devkit way.

    Images missing from ``ground_truth`` have no box of this class; their detections are
    FPs (rejecting images outside the evaluated set is :func:`evaluate_detections`' job).
    """
    if not 0.0 < iou_thresh <= 1.0:
        raise ArgumentError(f"iou_thresh must be in (0, 1], got {iou_thresh}")
    tp, fp, npos = _match(detections, ground_truth, iou_thresh)
    ctp = np.cumsum(tp)
    cfp = np.cumsum(fp)
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = ctp / npos if npos else np.full(len(tp), np.nan)
        prec = np.where(ctp + cfp > 0, ctp / np.maximum(ctp + cfp, 1.0), 0.0)
    if npos == 0:
        ap07 = ap_area = float("nan")
    else:
        ap07 = voc_ap(rec, prec, use_07_metric=True)
        ap_area = voc_ap(rec, prec, use_07_metric=False)
    return ClassEval(rec, prec, ap07, ap_area, npos, tp, fp)


@dataclass(frozen=True)
class EvalResult:
    """Per-class VOC evaluations, in ``class_names`` order."""

    class_names: tuple[str, ...]
    per_class: dict[str, ClassEval]
    iou_thresh: float = 0.5

    @property
    def ap07(self) -> dict[str, float]:
        return {c: self.per_class[c].ap07 for c in self.class_names}

    @property
    def ap_area(self) -> dict[str, float]:
        return {c: self.per_class[c].ap_area for c in self.class_names}

    @staticmethod
    def _mean(values: Iterable[float]) -> float:
        v = np.array([x for x in values if not np.isnan(x)], dtype=np.float64)
        return float(v.mean()) if v.size else float("nan")

    @property
    def mAP(self) -> float:  # noqa: N802 (the metric's name)
        """Mean VOC07 11-point AP over classes that have ground truth."""
        return self._mean(self.ap07.values())

    @property
    def mAP_area(self) -> float:  # noqa: N802
        """Mean area AP over classes that have ground truth."""
        return self._mean(self.ap_area.values())


def class_ground_truth(
    annotations: Iterable[AnnotationLike], num_classes: int
) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Split annotations into one :data:`ClassGroundTruth` per class (every image listed in
    every class, possibly with no boxes). Duplicate image ids are an error."""
    per_class: list[dict[str, tuple[np.ndarray, np.ndarray]]] = [{} for _ in range(num_classes)]
    seen: set[str] = set()
    for ann in annotations:
        img = str(ann.image_id)
        if img in seen:
            raise DataError(f"image {img!r} appears twice in the ground truth")
        seen.add(img)
        boxes = np.asarray(ann.boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(ann.labels).reshape(-1)
        diff = np.asarray(ann.difficult, dtype=bool).reshape(-1)
        if not len(boxes) == len(labels) == len(diff):
            raise DataError(f"image {img!r}: boxes, labels and difficult flags differ in length")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(f"image {img!r}: label outside the {num_classes} classes")
        for k in range(num_classes):
            sel = labels == k
            per_class[k][img] = (boxes[sel], diff[sel])
    return per_class


def evaluate_detections(
    dets_by_class: Mapping[str, ClassDetections],
    annotations: Iterable[AnnotationLike],
    class_names: Sequence[str],
    iou_thresh: float = 0.5,
) -> EvalResult:
    """Evaluate every class of ``class_names`` over the images of ``annotations``.

    A class missing from ``dets_by_class`` has no detections (AP 0). A detection on an
    image outside ``annotations`` or a class outside ``class_names`` is a
    :class:`DataError` (the devkit stops on an unrecognised image too).
    """
    class_names = tuple(class_names)
    unknown = set(dets_by_class) - set(class_names)
    if unknown:
        raise DataError(f"detections for unknown classes: {', '.join(sorted(unknown))}")
    annotations = list(annotations)
    gts = class_ground_truth(annotations, len(class_names))
    image_ids = {str(a.image_id) for a in annotations}
    per_class: dict[str, ClassEval] = {}
    for k, name in enumerate(class_names):
        dets = dets_by_class.get(name, ClassDetections.empty())
        stray = set(np.unique(dets.image_ids).tolist()) - image_ids
        if stray:
            raise DataError(
                f"detections of class {name!r} name {len(stray)} image(s) outside the "
                f"evaluated set, e.g. {sorted(stray)[0]!r}"
            )
        per_class[name] = evaluate_class(dets, gts[k], iou_thresh)
    return EvalResult(class_names, per_class, iou_thresh)

"""COCO-style metrics (AP@[0.5:0.95] and friends) through pycocotools, built in memory.

Mapping to COCO:
- An internal box (x1, y1, x2, y2) becomes COCO's (x, y, w, h) = (x1, y1, x2 - x1, y2 - y1);
  COCO's continuous IoU on it equals the VOC "+1" IoU, as for internal boxes.
- Image ids become 1, 2, ...; class k becomes category k + 1; annotation ids start at 1
  (pycocotools treats id 0 as "unmatched").
- Difficult boxes become ``iscrowd=1``: pycocotools ignores them in recall and ignores the
  detections matched to them, which is the VOC rule. (Its ``ignore`` field is overwritten
  from ``iscrowd`` in ``COCOeval._prepare``, so ``iscrowd`` is the only way.) Two
  differences remain: the overlap with a crowd box is intersection / detection area, not
  IoU, and a detection prefers any free non-difficult box over a difficult one.
- COCO matching differs from VOC's in general: a detection whose best box is taken falls
  back to the next free box with IoU >= t (VOC calls it a duplicate FP), precision is read
  at 101 recall points, and only the 100 best detections per image and class count.

pycocotools' progress prints are captured, not shown.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sppdet.detections import ClassDetections
from sppdet.errors import DataError
from sppdet.evaluation.voc import AnnotationLike

#: Names of ``COCOeval.stats``, in order.
COCO_STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR_1", "AR_10", "AR_100", "AR_small", "AR_medium", "AR_large",
)


def _xywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def _coco_object(dataset: dict[str, Any]) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _datasets(
    dets_by_class: Mapping[str, ClassDetections],
    annotations: Iterable[AnnotationLike],
    class_names: Sequence[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """COCO-format ground-truth and detection data sets (plain dicts)."""
    images, gt_anns = [], []
    image_index: dict[str, int] = {}
    for ann in annotations:
        img_id = len(image_index) + 1
        image_index[str(ann.image_id)] = img_id
        image: dict[str, Any] = {"id": img_id, "file_name": str(ann.image_id)}
        for key in ("width", "height"):
            if getattr(ann, key, None) is not None:
                image[key] = int(getattr(ann, key))
        images.append(image)
        xywh = _xywh(ann.boxes)
        labels = np.asarray(ann.labels).reshape(-1)
        diff = np.asarray(ann.difficult, dtype=bool).reshape(-1)
        for box, label, d in zip(xywh.tolist(), labels.tolist(), diff.tolist()):
            gt_anns.append({
                "id": len(gt_anns) + 1, "image_id": img_id, "category_id": int(label) + 1,
                "bbox": box, "area": box[2] * box[3], "iscrowd": int(d),
            })
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(class_names)]
    dt_anns = []
    for k, name in enumerate(class_names):
        dets = dets_by_class.get(name, ClassDetections.empty())
        xywh = _xywh(dets.boxes)
        for img, score, box in zip(dets.image_ids.tolist(), dets.scores.tolist(), xywh.tolist()):
            if img not in image_index:
                raise DataError(f"detections of class {name!r} name image {img!r}, outside the evaluated set")
            dt_anns.append({
                "id": len(dt_anns) + 1, "image_id": image_index[img], "category_id": k + 1,
                "bbox": box, "area": box[2] * box[3], "score": score, "iscrowd": 0,
            })
    gt = {"images": images, "categories": categories, "annotations": gt_anns}
    dt = {"images": images, "categories": categories, "annotations": dt_anns}
    return gt, dt


def _nan_if_absent(x: float) -> float:
    return float("nan") if x < 0 else float(x)


def coco_evaluate(
    dets_by_class: Mapping[str, ClassDetections],
    annotations: Iterable[AnnotationLike],
    class_names: Sequence[str],
) -> dict[str, Any]:
    """COCO box metrics: the 12 ``COCOeval.stats`` (keys :data:`COCO_STAT_NAMES`), plus
    ``AP_per_class`` (AP@[0.5:0.95]) and ``AP50_per_class``. Undefined values (no ground
    truth) are NaN."""
    gt, dt = _datasets(dets_by_class, list(annotations), tuple(class_names))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _coco_object(gt)
        coco_dt = _coco_object(dt)
    return _summarize(coco_gt, coco_dt, class_names)


def coco_evaluate_dataset(dets_by_class: Mapping[str, ClassDetections], dataset: Any) -> dict[str, Any]:
    """The same metrics against a COCO data set's own ground truth (``COCODataset``): its
    ``area`` fields (hence the small / medium / large split), its crowd regions and its
    unclipped boxes, on the images of ``dataset.ids`` only, as the official evaluation of a
    results file does."""
    from sppdet.data.coco import coco_index, coco_results

    coco_gt = dataset.coco
    results = coco_results(dets_by_class, dataset)
    anns = []
    for k, r in enumerate(results, start=1):
        x, y, w, h = r["bbox"]
        anns.append({**r, "id": k, "area": w * h, "iscrowd": 0})
    coco_dt = coco_index({"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"],
                          "annotations": anns})
    img_ids = [dataset.coco_image_id(i) for i in dataset.ids]
    return _summarize(coco_gt, coco_dt, dataset.classes, img_ids)


def _summarize(coco_gt: Any, coco_dt: Any, class_names: Sequence[str],
               img_ids: Sequence[int] | None = None) -> dict[str, Any]:
    """Run ``COCOeval`` (bbox); class k of ``class_names`` is the k-th smallest category id."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if img_ids is not None:
            ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out: dict[str, Any] = {n: _nan_if_absent(v) for n, v in zip(COCO_STAT_NAMES, ev.stats)}
    # precision: [T iou thresholds, R recall points, K classes, A area ranges, M max dets];
    # area "all" is index 0 and maxDets=100 the last.
    precision = ev.eval["precision"][:, :, :, 0, -1]
    ap, ap50 = {}, {}
    for k, name in enumerate(class_names):
        p = precision[:, :, k]
        ap[name] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
        p50 = p[0]
        ap50[name] = float(p50[p50 > -1].mean()) if (p50 > -1).any() else float("nan")
    out["AP_per_class"] = ap
    out["AP50_per_class"] = ap50
    return out

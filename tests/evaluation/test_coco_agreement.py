"""pycocotools' AP next to the VOC APs on cases where their relation is known."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from sppdet.detections import ClassDetections
from sppdet.errors import DataError
from sppdet.evaluation.coco import COCO_STAT_NAMES, coco_evaluate
from sppdet.evaluation.voc import evaluate_detections

A = [0.0, 0.0, 10.0, 10.0]
B = [20.0, 20.0, 30.0, 30.0]
FAR = [50.0, 50.0, 60.0, 60.0]


def ann(image_id, boxes, labels, difficult=None):
    boxes = np.array(boxes, float).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.array(difficult, bool)
    return SimpleNamespace(image_id=image_id, boxes=boxes, labels=np.array(labels, int),
                           difficult=difficult, width=100, height=100)


def dets(*rows):
    ids, scores, boxes = zip(*rows)
    return ClassDetections(list(ids), list(scores), np.array(boxes))


def both(dets_by_class, anns, classes=("cat",)):
    return evaluate_detections(dets_by_class, anns, classes), coco_evaluate(dets_by_class, anns, classes)


def coco_101_point(rec, prec):
    """COCO's AP at one IoU: precision envelope read at recall r = 0, 0.01, ..., 1 (the first
    rank whose recall reaches r), 0 where r is never reached; the mean of the 101 values."""
    env = np.maximum.accumulate(np.asarray(prec)[::-1])[::-1]
    vals = []
    for r in np.linspace(0, 1, 101):
        reach = np.flatnonzero(np.asarray(rec) >= r)
        vals.append(env[reach[0]] if reach.size else 0.0)
    return float(np.mean(vals))


def test_perfect_detector_is_one_everywhere():
    anns = [ann("a", [A, B], [0, 0]), ann("b", [B], [0])]
    voc, coco = both({"cat": dets(("a", 0.9, A), ("a", 0.8, B), ("b", 0.7, B))}, anns)
    assert voc.mAP == voc.mAP_area == 1.0
    assert coco["AP"] == coco["AP50"] == coco["AP75"] == coco["AP_per_class"]["cat"] == 1.0
    assert set(COCO_STAT_NAMES) <= set(coco)


def test_known_pr_curve_by_hand():
    # TP, FP, TP over 2 boxes: recall .5 .5 1, precision 1 .5 2/3.
    # VOC area: .5 * 1 + .5 * 2/3.  COCO: recall points 0..0.50 (51 of them) read 1,
    # 0.51..1 (50) read 2/3 -> (51 + 50 * 2/3) / 101; they differ by exactly
    # (51 + 100/3) / 101 - 5/6 = 0.0016501650...
    voc, coco = both({"cat": dets(("a", 0.9, A), ("a", 0.8, FAR), ("a", 0.7, B))}, [ann("a", [A, B], [0, 0])])
    assert voc.ap_area["cat"] == pytest.approx(5 / 6, abs=1e-15)
    assert coco["AP50"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    assert coco["AP50"] - voc.ap_area["cat"] == pytest.approx((51 + 100 / 3) / 101 - 5 / 6, abs=1e-12)
    assert coco["AP"] == pytest.approx(coco["AP50"], abs=1e-12)  # IoUs 1 or 0: thresholds alike


@pytest.mark.parametrize("seed", range(10))
def test_unambiguous_random_rankings_differ_only_by_interpolation(seed):
    # Ground-truth boxes far apart; detections are exact copies (TP, or duplicate FP) or far
    # away (FP): VOC and COCO then match identically, and COCO's AP50 is the 101-point
    # reading of the very curve whose area is VOC's area AP.
    rng = np.random.default_rng(seed)
    anns, rows = [], []
    for i in range(int(rng.integers(2, 8))):
        img = f"{i:06d}"
        boxes = [[40.0 * j, 0.0, 40.0 * j + 20, 20.0] for j in range(int(rng.integers(1, 4)))]
        anns.append(ann(img, boxes, [0] * len(boxes)))
        for b in boxes:
            for _ in range(int(rng.integers(0, 3))):
                rows.append((img, float(rng.random()), b))
        for _ in range(int(rng.integers(0, 3))):
            rows.append((img, float(rng.random()), [500.0, 500.0, 520.0, 520.0]))
    rows.append(("000000", 0.5, [500.0, 500.0, 520.0, 520.0]))
    voc, coco = both({"cat": dets(*rows)}, anns)
    ev = voc.per_class["cat"]
    assert coco["AP50"] == pytest.approx(coco_101_point(ev.rec, ev.prec), abs=1e-9)
    assert coco["AP"] == pytest.approx(coco["AP50"], abs=1e-12)
    # VOC's area is the integral of the same non-increasing step function F(r) over [0, 1]
    # that COCO samples at 101 points: the two differ by at most one step (F <= 1) of 1/100
    # plus the extra sample's weight 1/101.
    assert abs(coco["AP50"] - voc.ap_area["cat"]) <= 0.01 + 1 / 101


def test_difficult_boxes_are_ignored_by_both():
    # A detection on the difficult box B is neither TP nor FP in either metric, and the
    # missed difficult box FAR costs no recall. (Counted as normal boxes: AP50 about 2/3;
    # dropped from the ground truth: the hit on B is an FP ranked first, AP 0.5.)
    anns = [ann("a", [A, B, FAR], [0, 0, 0], [False, True, True])]
    voc, coco = both({"cat": dets(("a", 0.9, B), ("a", 0.8, A))}, anns)
    assert voc.per_class["cat"].npos == 1 and voc.mAP == 1.0
    assert coco["AP50"] == pytest.approx(1.0, abs=1e-12)  # pycocotools' tp / (tp + fp + eps)


def test_known_difference_duplicate_fallback():
    # The second detection's best box A is taken. VOC: duplicate FP (AP area 0.5, 11-point
    # 6/11). COCO: it falls back to the free box A2 (IoU 100/120 >= 0.5) -> TP, AP50 1.
    a2 = [0.0, 0.0, 10.0, 12.0]
    voc, coco = both({"cat": dets(("a", 0.9, A), ("a", 0.8, A))}, [ann("a", [A, a2], [0, 0])])
    assert voc.ap_area["cat"] == 0.5 and voc.mAP == pytest.approx(6 / 11, abs=1e-15)
    assert coco["AP50"] == pytest.approx(1.0, abs=1e-12)


def test_no_detections_and_classes_without_ground_truth():
    coco = coco_evaluate({}, [ann("a", [A], [0])], ["cat", "dog"])
    assert coco["AP_per_class"]["cat"] == 0.0 and math.isnan(coco["AP_per_class"]["dog"])
    assert coco["AP"] == 0.0
    with pytest.raises(DataError, match="outside the evaluated set"):
        coco_evaluate({"cat": dets(("zz", 0.5, A))}, [ann("a", [A], [0])], ["cat"])


def test_pycocotools_prints_nothing(capsys):
    coco_evaluate({"cat": dets(("a", 0.9, A))}, [ann("a", [A], [0])], ["cat"])
    assert capsys.readouterr().out == ""

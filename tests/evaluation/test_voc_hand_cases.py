"""Hand-computed VOC 2007 AP cases (every expected value worked out in the comments)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sppdet.boxes import box_iou, voc_to_internal
from sppdet.detections import ClassDetections
from sppdet.errors import DataError
from sppdet.evaluation.voc import (VOC07_RECALL_THRESHOLDS, evaluate_class, evaluate_detections,
                                   voc07_interpolated_precision, voc_ap)

A = [0, 0, 10, 10]      # internal boxes, area 100
B = [20, 20, 30, 30]
FAR = [50, 50, 60, 60]


def dets(*rows):
    """rows of (image id, score, internal box)."""
    if not rows:
        return ClassDetections.empty()
    ids, scores, boxes = zip(*rows)
    return ClassDetections(list(ids), list(scores), np.array(boxes, dtype=float))


def gt(boxes, difficult=None):
    boxes = np.array(boxes, dtype=float).reshape(-1, 4)
    diff = np.zeros(len(boxes), bool) if difficult is None else np.array(difficult, bool)
    return boxes, diff


def test_perfect_detector():
    ev = evaluate_class(dets(("a", 0.9, A), ("a", 0.8, B), ("b", 0.7, A)),
                        {"a": gt([A, B]), "b": gt([A])})
    assert ev.npos == 3
    assert ev.tp.tolist() == [1, 1, 1] and ev.fp.tolist() == [0, 0, 0]
    assert ev.rec.tolist() == [1 / 3, 2 / 3, 1.0] and ev.prec.tolist() == [1.0, 1.0, 1.0]
    assert ev.ap07 == 1.0 and ev.ap_area == 1.0


def test_no_detections_and_only_false_positives():
    ev = evaluate_class(dets(), {"a": gt([A])})
    assert (ev.ap07, ev.ap_area, ev.npos, ev.ndet) == (0.0, 0.0, 1, 0)
    ev = evaluate_class(dets(("a", 0.9, FAR), ("a", 0.5, B)), {"a": gt([A])})
    assert ev.fp.tolist() == [1, 1] and ev.ap07 == 0.0 and ev.ap_area == 0.0


def test_one_duplicate_is_a_false_positive():
    # ranks: A (TP), A again (duplicate -> FP), B (TP). rec .5 .5 1, prec 1 .5 2/3.
    ev = evaluate_class(dets(("a", 0.9, A), ("a", 0.8, [0, 0, 10, 9]), ("a", 0.7, B)),
                        {"a": gt([A, B])})
    assert ev.tp.tolist() == [1, 0, 1] and ev.fp.tolist() == [0, 1, 0]
    assert ev.rec.tolist() == [0.5, 0.5, 1.0]
    np.testing.assert_allclose(ev.prec, [1.0, 0.5, 2 / 3])
    # 11-point: t = 0 .. 0.5 (6 thresholds) -> 1; t = 0.6 .. 1 (5) -> 2/3.
    assert ev.ap07 == pytest.approx((6 * 1 + 5 * 2 / 3) / 11, abs=1e-15)
    # area: 0.5 * 1 + 0.5 * 2/3
    assert ev.ap_area == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-15)


def test_duplicate_is_fp_even_if_another_box_overlaps_enough():
    # The second detection's best box is A (already taken); its IoU with A2 is also >= 0.5
    # but the devkit never falls back to the second-best box.
    a2 = [0, 0, 10, 12]                                 # IoU(A, a2) = 100/120
    ev = evaluate_class(dets(("a", 0.9, A), ("a", 0.8, A)), {"a": gt([A, a2])})
    assert ev.tp.tolist() == [1, 0] and ev.fp.tolist() == [0, 1]


def test_difficult_match_is_neither_tp_nor_fp_and_not_in_recall():
    # gt: A (normal), B (difficult). Ranks: B (ignored), B again (ignored, not a duplicate
    # FP), FAR (FP), A (TP). npos = 1; counts tp 0 0 0 1, fp 0 0 1 1.
    ev = evaluate_class(dets(("a", 0.9, B), ("a", 0.85, B), ("a", 0.8, FAR), ("a", 0.7, A)),
                        {"a": gt([A, B], [False, True])})
    assert ev.npos == 1
    assert ev.tp.tolist() == [0, 0, 0, 1] and ev.fp.tolist() == [0, 0, 1, 0]
    assert ev.rec.tolist() == [0, 0, 0, 1]
    assert ev.prec.tolist() == [0, 0, 0, 0.5]  # 0/0 at the first ranks is taken as 0
    assert ev.ap07 == 0.5 and ev.ap_area == 0.5


def test_iou_exactly_one_half_matches():
    g = [0, 0, 3, 2]                                   # area 6
    shifted = [1, 0, 4, 2]                             # inter 2*2 = 4, union 8 -> 0.5
    assert box_iou(np.array([shifted], float), np.array([g], float))[0, 0] == 0.5
    ev = evaluate_class(dets(("a", 1.0, shifted)), {"a": gt([g])})
    assert ev.tp.tolist() == [1] and ev.ap07 == 1.0
    # Just below: inter 2*2 = 4, union 6 + 6.25 - 4 = 8.25.
    below = [1, 0, 4, 2.25]
    ev = evaluate_class(dets(("a", 1.0, below)), {"a": gt([g])})
    assert ev.tp.tolist() == [0] and ev.fp.tolist() == [1]
    # An exact 0.5 from VOC 1-based inclusive boxes (1,1,10,10) and (1,1,10,5).
    g_voc, d_voc = voc_to_internal([[1, 1, 10, 10]]), voc_to_internal([[1, 1, 10, 5]])
    assert box_iou(d_voc, g_voc)[0, 0] == 0.5      # devkit: (10*5) / (100 + 50 - 50)
    ev = evaluate_class(ClassDetections(["a"], [1.0], d_voc), {"a": (g_voc, np.zeros(1, bool))})
    assert ev.tp.tolist() == [1]


def test_iou_threshold_is_a_parameter():
    g, d = [0, 0, 3, 2], [1, 0, 4, 2]                  # IoU 0.5
    assert evaluate_class(dets(("a", 1.0, d)), {"a": gt([g])}, iou_thresh=0.5).tp[0] == 1
    assert evaluate_class(dets(("a", 1.0, d)), {"a": gt([g])}, iou_thresh=0.51).tp[0] == 0
    with pytest.raises(ValueError):
        evaluate_class(dets(), {"a": gt([g])}, iou_thresh=0.0)


def test_image_without_ground_truth():
    # Image "b" holds nothing of the class: its detection is an FP ranked first.
    # ranks: b (FP), a (TP). rec 0 1, prec 0 .5 -> 11-point 0.5, area 0.5.
    ev = evaluate_class(dets(("b", 0.9, A), ("a", 0.8, A)), {"a": gt([A]), "b": gt([])})
    assert ev.tp.tolist() == [0, 1] and ev.ap07 == 0.5 and ev.ap_area == 0.5
    # Absent from the mapping behaves the same.
    ev2 = evaluate_class(dets(("b", 0.9, A), ("a", 0.8, A)), {"a": gt([A])})
    assert ev2.tp.tolist() == [0, 1] and ev2.ap07 == 0.5


def test_score_ties_keep_input_order():
    # Equal scores: MATLAB's sort is stable, so the first listed comes first.
    ev = evaluate_class(dets(("a", 0.5, FAR), ("a", 0.5, A)), {"a": gt([A])})
    assert ev.tp.tolist() == [0, 1]
    ev = evaluate_class(dets(("a", 0.5, A), ("a", 0.5, FAR)), {"a": gt([A])})
    assert ev.tp.tolist() == [1, 0]


def test_recall_thresholds_are_matlabs_colon():
    # MATLAB's 0:0.1:1 fills the left half as k*0.1 and the right half as 1 - k*0.1: only
    # the fourth value differs from the exact tenth (0.1*3 = 0.30000000000000004).
    expected = [k * 0.1 for k in range(6)] + [1 - k * 0.1 for k in range(4, -1, -1)]
    assert VOC07_RECALL_THRESHOLDS.tolist() == expected
    differs = [i for i in range(11) if VOC07_RECALL_THRESHOLDS[i] != i / 10]
    assert differs == [3]
    # Consequence: a recall of exactly 3/10 does not reach t = 0.3 in the devkit.
    assert voc_ap(np.array([3 / 10]), np.array([1.0]), use_07_metric=True) == 3 / 11
    assert voc_ap(np.array([7 / 10]), np.array([1.0]), use_07_metric=True) == 8 / 11


def test_voc_ap_area_by_hand():
    rec, prec = np.array([0.25, 0.5, 0.5, 0.75]), np.array([1.0, 0.5, 2 / 3, 0.5])
    # envelope at the recall steps: .25 -> 1, .5 -> 2/3, .75 -> .5; recall 1 never reached.
    assert voc_ap(rec, prec, False) == pytest.approx(0.25 + 0.25 * 2 / 3 + 0.25 * 0.5, abs=1e-15)
    # 11-point: t 0..0.2 -> 1, t 0.30000000000000004..0.5 -> 2/3, 0.6..0.7 -> .5, 0.8..1 -> 0
    assert voc07_interpolated_precision(rec, prec).tolist() == [1, 1, 1] + [2 / 3] * 3 + [0.5] * 2 + [0] * 3
    assert voc_ap(np.array([]), np.array([]), True) == 0.0
    assert voc_ap(np.array([]), np.array([]), False) == 0.0


def ann(image_id, boxes, labels, difficult=None):
    boxes = np.array(boxes, float).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.array(difficult, bool)
    return SimpleNamespace(image_id=image_id, boxes=boxes, labels=np.array(labels, int), difficult=difficult)


def test_evaluate_detections_classes_and_means():
    anns = [ann("a", [A, B], [0, 1]), ann("b", [], []), ann("c", [B], [1], [True])]
    res = evaluate_detections(
        {"cat": dets(("a", 0.9, A)),            # cat: perfect -> 1
         # dog: FP on "b" (no box), TP on "a", ignored on "c" (difficult): rec 0 1 1,
         # prec 0 .5 .5 -> 0.5
         "dog": dets(("b", 0.9, B), ("a", 0.5, B), ("c", 0.4, B))},
        anns, ["cat", "dog", "bird"])
    assert res.ap07["cat"] == 1.0
    assert res.per_class["dog"].tp.tolist() == [0, 1, 0] and res.per_class["dog"].fp.tolist() == [1, 0, 0]
    assert res.ap07["dog"] == 0.5
    # bird: no ground truth at all -> undefined, left out of the mean
    assert np.isnan(res.ap07["bird"]) and res.per_class["bird"].npos == 0
    assert res.mAP == 0.75 and res.mAP_area == 0.75


def test_class_without_detections_scores_zero():
    res = evaluate_detections({"cat": dets(("a", 0.9, A))}, [ann("a", [A, B], [0, 1])], ["cat", "dog"])
    assert res.ap07 == {"cat": 1.0, "dog": 0.0} and res.mAP == 0.5


def test_bad_inputs_are_clear_errors():
    with pytest.raises(DataError, match="outside the evaluated set"):
        evaluate_detections({"cat": dets(("zzz", 0.9, A))}, [ann("a", [A], [0])], ["cat"])
    with pytest.raises(DataError, match="unknown classes: cow"):
        evaluate_detections({"cow": dets()}, [ann("a", [A], [0])], ["cat"])
    with pytest.raises(DataError, match="twice"):
        evaluate_detections({}, [ann("a", [A], [0]), ann("a", [A], [0])], ["cat"])
    with pytest.raises(DataError, match="label outside"):
        evaluate_detections({}, [ann("a", [A], [3])], ["cat"])

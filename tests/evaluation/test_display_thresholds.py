"""F1-optimal display thresholds against a brute-force search over every threshold, and
their use by `sppdet detect`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from sppdet.display import DEFAULT_DISPLAY_THRESHOLD, display_thresholds
from sppdet.detections import ClassDetections
from sppdet.evaluation.thresholds import (display_thresholds_config, f1_thresholds,
                                          pooled_f1_operating_point)
from sppdet.evaluation.voc import class_ground_truth, evaluate_class, evaluate_detections

CLASSES = ("a", "b", "c")


@dataclass
class Ann:
    image_id: str
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


def random_case(seed: int, ties: bool = False):
    rng = np.random.default_rng(seed)
    anns, dets = [], {c: [] for c in CLASSES}
    for i in range(12):
        k = int(rng.integers(0, 4))
        xy = rng.uniform(0, 60, (k, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 40, (k, 2))], 1)
        labels = rng.integers(0, len(CLASSES), k)
        anns.append(Ann(f"im{i}", boxes, labels, rng.random(k) < 0.15))
        for c in range(len(CLASSES)):
            own = boxes[labels == c]
            for _ in range(int(rng.integers(0, 6))):  # near a true box, or anywhere
                if len(own) and rng.random() < 0.6:
                    b = own[rng.integers(len(own))] + rng.normal(0, 4, 4)
                else:
                    p = rng.uniform(0, 60, 2)
                    b = np.concatenate([p, p + rng.uniform(10, 40, 2)])
                score = rng.normal(0, 1) + (0.5 if len(own) else 0.0)
                if ties:
                    score = round(score * 2) / 2
                dets[CLASSES[c]].append((f"im{i}", score, b))
    out = {}
    for c, rows in dets.items():
        out[c] = ClassDetections(np.array([r[0] for r in rows], dtype=str),
                                 np.array([r[1] for r in rows], dtype=np.float64),
                                 np.array([r[2] for r in rows], dtype=np.float64).reshape(-1, 4))
    return out, anns


def keep_above(d: ClassDetections, t: float) -> ClassDetections:
    k = d.scores > t
    return ClassDetections(d.image_ids[k], d.scores[k], d.boxes[k])


def f1_of(tp: float, fp: float, npos: int) -> float:
    p = tp / max(tp + fp, 1.0)
    r = tp / npos
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def candidate_thresholds(scores: np.ndarray) -> list[float]:
    s = np.unique(scores)
    return [float(s[0]) - 1.0] + [float(v) for v in s]  # every distinct prefix


@pytest.mark.parametrize("seed,ties", [(s, s % 3 == 0) for s in range(9)])
def test_per_class_threshold_maximises_f1_by_brute_force(seed, ties):
    dets, anns = random_case(seed, ties)
    gts = class_ground_truth(anns, len(CLASSES))
    ops = f1_thresholds(dets, evaluate_detections(dets, anns, CLASSES))
    for k, c in enumerate(CLASSES):
        d = dets[c]
        best = 0.0
        for t in candidate_thresholds(d.scores):
            ev = evaluate_class(keep_above(d, t), gts[k])
            if ev.npos:
                best = max(best, f1_of(ev.tp.sum(), ev.fp.sum(), ev.npos))
        op = ops[c]
        if best == 0.0:
            assert op is None
            continue
        assert op.f1 == pytest.approx(best)
        kept = keep_above(d, op.threshold)
        assert len(kept.scores) == op.detections  # the threshold never splits tied scores
        ev = evaluate_class(kept, gts[k])
        assert f1_of(ev.tp.sum(), ev.fp.sum(), ev.npos) == pytest.approx(op.f1)
        assert ev.tp.sum() / ev.npos == pytest.approx(op.recall)


@pytest.mark.parametrize("seed", range(5))
def test_pooled_threshold_maximises_f1_of_all_classes(seed):
    dets, anns = random_case(seed)
    result = evaluate_detections(dets, anns, CLASSES)
    op = pooled_f1_operating_point(dets, result)
    all_scores = np.concatenate([d.scores for d in dets.values()])
    best = 0.0
    for t in candidate_thresholds(all_scores):
        r = evaluate_detections({c: keep_above(d, t) for c, d in dets.items()}, anns, CLASSES)
        tp = sum(r.per_class[c].tp.sum() for c in CLASSES)
        fp = sum(r.per_class[c].fp.sum() for c in CLASSES)
        best = max(best, f1_of(tp, fp, sum(r.per_class[c].npos for c in CLASSES)))
    assert op.f1 == pytest.approx(best)


def test_class_without_true_positive_falls_back_to_pooled():
    dets, anns = random_case(1)
    far = ClassDetections(np.array(["im0", "im1"]), np.array([3.0, 2.0]),
                          np.array([[500, 500, 520, 520], [600, 600, 650, 640]], dtype=np.float64))
    dets["c"] = far
    result = evaluate_detections(dets, anns, CLASSES)
    ops = f1_thresholds(dets, result)
    assert ops["c"] is None
    pooled = pooled_f1_operating_point(dets, result)
    cfg = display_thresholds_config(ops, pooled, "dev-val")
    assert cfg["display_thresholds"]["c"] == pytest.approx(pooled.threshold, abs=1e-6)
    assert cfg["display_thresholds"]["a"] == pytest.approx(ops["a"].threshold, abs=1e-6)
    assert cfg["display_threshold"] == pytest.approx(pooled.threshold, abs=1e-6)


def test_detect_threshold_choice():
    classes = ["a", "b"]
    assert display_thresholds({}, classes, None) == (DEFAULT_DISPLAY_THRESHOLD, None)
    assert display_thresholds({"display_threshold": -0.2}, classes, None) == (-0.2, None)
    test = {"display_threshold": -0.2, "display_thresholds": {"a": -0.7}}
    assert display_thresholds(test, classes, None) == (-0.2, (-0.7, -0.2))
    assert display_thresholds(test, classes, 0.3) == (0.3, None)  # --score-thresh wins

"""Display thresholds: the score at which each class's F1 is highest on an evaluated split.

SVM scores are not probabilities, and each class's scores sit on their own scale, so one
fixed threshold shows too much of some classes and nothing of others. `sppdet eval` picks,
per class, the threshold that maximises F1 = 2 P R / (P + R) of the devkit's ranked list
(precision and recall exactly as ``voc.evaluate_class`` counts them: detections on
difficult boxes are neither true nor false positives), and `sppdet detect` shows a class's
detections scoring above its threshold. Choose them on a validation split, never on a test
set.

The threshold is placed halfway between the last kept score and the next lower one, so
that ``score > threshold`` keeps exactly the F1-optimal prefix of the ranked list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from sppdet.detections import ClassDetections
from sppdet.evaluation.voc import ClassEval, EvalResult


@dataclass(frozen=True)
class OperatingPoint:
    """A score threshold and the precision, recall and F1 of the detections above it."""

    threshold: float
    precision: float
    recall: float
    f1: float
    detections: int  # how many detections score above the threshold

    def to_json(self) -> dict[str, float]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _ranked_scores(dets: ClassDetections) -> np.ndarray:
    """Scores in the evaluation's rank order (descending, stable)."""
    return dets.scores[np.argsort(-dets.scores, kind="stable")].astype(np.float64)


def _best_prefix(scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, npos: int) -> OperatingPoint | None:
    """The F1-optimal prefix of a ranked list cut where the score changes; None without any
    true positive. Cuts only between different scores, since a threshold cannot split ties."""
    if npos <= 0 or not np.any(tp):
        return None
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    cut = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))  # last rank of each score
    prec = ctp[cut] / np.maximum(ctp[cut] + cfp[cut], 1.0)
    rec = ctp[cut] / npos
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    k = int(np.argmax(f1))  # the first (highest-threshold) maximum
    r = int(cut[k])
    nxt = scores[r + 1] if r + 1 < len(scores) else scores[r] - 1.0
    return OperatingPoint(threshold=float((scores[r] + nxt) / 2), precision=float(prec[k]),
                          recall=float(rec[k]), f1=float(f1[k]), detections=r + 1)


def f1_operating_point(dets: ClassDetections, class_eval: ClassEval) -> OperatingPoint | None:
    """One class's F1-optimal threshold (None where the class has no true positive)."""
    return _best_prefix(_ranked_scores(dets), class_eval.tp, class_eval.fp, class_eval.npos)


def f1_thresholds(dets_by_class: Mapping[str, ClassDetections],
                  result: EvalResult) -> dict[str, OperatingPoint | None]:
    """Per-class F1-optimal operating points of an evaluation (``result``) of
    ``dets_by_class``."""
    out: dict[str, OperatingPoint | None] = {}
    for name in result.class_names:
        dets = dets_by_class.get(name, ClassDetections.empty())
        out[name] = f1_operating_point(dets, result.per_class[name])
    return out


def pooled_f1_operating_point(dets_by_class: Mapping[str, ClassDetections],
                              result: EvalResult) -> OperatingPoint | None:
    """One threshold for every class: F1 of all classes' detections ranked together."""
    scores, tp, fp, npos = [], [], [], 0
    for name in result.class_names:
        ev = result.per_class[name]
        if ev.npos == 0:
            continue
        scores.append(_ranked_scores(dets_by_class.get(name, ClassDetections.empty())))
        tp.append(ev.tp)
        fp.append(ev.fp)
        npos += ev.npos
    if not scores:
        return None
    s = np.concatenate(scores)
    order = np.argsort(-s, kind="stable")
    return _best_prefix(s[order], np.concatenate(tp)[order], np.concatenate(fp)[order], npos)


def display_thresholds_config(per_class: Mapping[str, OperatingPoint | None],
                              pooled: OperatingPoint | None, split: str) -> dict:
    """The ``test`` entries of a model's config.json that `sppdet detect` reads: one
    threshold per class (the pooled one for classes without a true positive)."""
    fallback = pooled.threshold if pooled is not None else None
    thresholds = {c: (op.threshold if op is not None else fallback) for c, op in per_class.items()}
    entry: dict = {"display_thresholds": {c: round(t, 6) for c, t in thresholds.items() if t is not None},
                   "display_thresholds_from": f"F1-optimal on {split}"}
    if fallback is not None:
        entry["display_threshold"] = round(fallback, 6)
    return entry

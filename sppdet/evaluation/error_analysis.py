"""False-positive analysis of Hoiem, Chodpathumwan and Dai (ECCV 2012), as R-CNN and
SPP-net used it: what the top-ranked detections of each class are.

Each class's detections are walked in descending score over the whole split (as the VOC
devkit ranks them) and each is given the first type that applies:

- ``Cor``: IoU >= 0.5 with a not yet matched object of the class (a match, as in AP);
- ``Loc``: poor localisation: the right class at IoU in [0.1, 0.5), or a duplicate
  (IoU >= 0.5 with an object of the class that an earlier detection matched);
- ``Sim``: confused with a similar class (IoU >= 0.1 with an object of another class of
  the same group: animals, vehicles, furniture for VOC);
- ``Oth``: confused with any other class (IoU >= 0.1);
- ``BG``: background (IoU < 0.1 with every object).

A detection matching a difficult object (IoU >= 0.5, the devkit's rule) is ignored, as in
AP. For each class, the top ``k x n`` detections are counted for multiples ``k`` of its
number ``n`` of non-difficult objects; a group's curve sums its classes' counts at each
``k``, so every class weighs by its number of objects (Hoiem et al.'s normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from sppdet.boxes import box_iou
from sppdet.detections import ClassDetections
from sppdet.evaluation.voc import AnnotationLike

TYPES = ("Cor", "Loc", "Sim", "Oth", "BG")
VOC_GROUPS: dict[str, tuple[str, ...]] = {
    "animals": ("bird", "cat", "cow", "dog", "horse", "sheep"),
    "vehicles": ("aeroplane", "bicycle", "boat", "bus", "car", "motorbike", "train"),
    "furniture": ("chair", "diningtable", "sofa"),
}
# Multiples of the number of objects at which the curves are sampled.
DEFAULT_MULTIPLES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
IGNORED = -1  # a detection on a difficult object: neither counted nor plotted


def groups_for(classes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """VOC's groups restricted to ``classes`` (groups with fewer than two members dropped)."""
    out = {}
    for name, members in VOC_GROUPS.items():
        present = tuple(c for c in members if c in classes)
        if len(present) >= 2:
            out[name] = present
    return out


def classify_detections(cls: int, dets: ClassDetections, annotations: Sequence[AnnotationLike],
                        similar: set[int]) -> np.ndarray:
    """Type index (into ``TYPES``, or ``IGNORED``) of each of class ``cls``'s detections,
    in descending score order (stable, as the devkit sorts)."""
    by_image = {a.image_id: a for a in annotations}
    order = np.argsort(-dets.scores, kind="stable")
    matched: dict[str, np.ndarray] = {}
    out = np.empty(len(order), np.int64)
    for rank, i in enumerate(order):
        ann = by_image.get(str(dets.image_ids[i]))
        if ann is None or len(ann.labels) == 0:
            out[rank] = 4
            continue
        labels = np.asarray(ann.labels)
        difficult = np.asarray(ann.difficult, bool)
        iou = box_iou(dets.boxes[i:i + 1], np.asarray(ann.boxes, np.float64))[0]
        own = labels == cls
        used = matched.setdefault(ann.image_id, np.zeros(len(labels), bool))
        if own.any():
            j = np.flatnonzero(own)[np.argmax(iou[own])]
            if iou[j] >= 0.5:
                if difficult[j]:
                    out[rank] = IGNORED
                elif not used[j]:
                    used[j] = True
                    out[rank] = 0
                else:
                    out[rank] = 1  # duplicate
                continue
            if iou[j] >= 0.1:
                out[rank] = 1
                continue
        sim = np.isin(labels, list(similar)) & ~own
        if sim.any() and iou[sim].max() >= 0.1:
            out[rank] = 2
        elif (~own).any() and iou[~own].max() >= 0.1:
            out[rank] = 3
        else:
            out[rank] = 4
    return out


@dataclass(frozen=True)
class ClassAnalysis:
    """One class's detection types: ``counts[k, t]`` among its top ``multiples[k] x
    num_objects`` detections (ignored ones skipped)."""

    name: str
    num_objects: int
    multiples: tuple[float, ...]
    counts: np.ndarray  # (K, 5) int

    def shares_at(self, k: int) -> dict[str, float]:
        total = self.counts[k].sum()
        return {t: float(self.counts[k, i] / total) if total else 0.0 for i, t in enumerate(TYPES)}


def analyze_class(cls: int, name: str, dets: ClassDetections, annotations: Sequence[AnnotationLike],
                  similar: set[int], multiples: Sequence[float] = DEFAULT_MULTIPLES) -> ClassAnalysis:
    types = classify_detections(cls, dets, annotations, similar)
    types = types[types != IGNORED]
    n = int(sum(int(((np.asarray(a.labels) == cls) & ~np.asarray(a.difficult, bool)).sum())
                for a in annotations))
    counts = np.zeros((len(multiples), len(TYPES)), np.int64)
    for k, m in enumerate(multiples):
        top = types[: int(round(m * n))]
        counts[k] = np.bincount(top, minlength=len(TYPES))
    return ClassAnalysis(name, n, tuple(multiples), counts)


def analyze(dets_by_class: Mapping[str, ClassDetections], annotations: Sequence[AnnotationLike],
            classes: Sequence[str], groups: Mapping[str, Sequence[str]] | None = None,
            multiples: Sequence[float] = DEFAULT_MULTIPLES) -> dict:
    """The analysis of every class and group, as a JSON-ready dict (shares in [0, 1])."""
    groups = groups_for(classes) if groups is None else dict(groups)
    index = {c: i for i, c in enumerate(classes)}
    group_of = {c: g for g, members in groups.items() for c in members}
    per_class = {}
    for c, name in enumerate(classes):
        similar = {index[m] for m in groups.get(group_of.get(name, ""), ()) if m != name}
        dets = dets_by_class.get(name, ClassDetections.empty())
        per_class[name] = analyze_class(c, name, dets, annotations, similar, multiples)
    all_groups = {**{g: tuple(m) for g, m in groups.items()}, "all": tuple(classes)}
    out_groups = {}
    for g, members in all_groups.items():
        counts = sum((per_class[m].counts for m in members), np.zeros((len(multiples), 5), np.int64))
        out_groups[g] = {"classes": list(members), "counts": counts.tolist(),
                         "shares": [_shares(row) for row in counts]}
    return {"types": list(TYPES), "multiples": list(multiples), "groups": out_groups,
            "classes": {n: {"num_objects": a.num_objects, "counts": a.counts.tolist(),
                            "shares_at_num_objects": a.shares_at(_index_of_one(multiples))}
                        for n, a in per_class.items()}}


def _shares(row: np.ndarray) -> dict[str, float]:
    total = row.sum()
    return {t: float(row[i] / total) if total else 0.0 for i, t in enumerate(TYPES)}


def _index_of_one(multiples: Sequence[float]) -> int:
    return int(np.argmin(np.abs(np.asarray(multiples) - 1.0)))


def plot_analysis(result: dict, path: str | Path, title: str | None = None) -> Path:
    """One stacked-area panel per group: the cumulative share of each type among the top
    detections, against their number as a multiple of the number of objects (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from sppdet.fileio import atomic_path

    groups = result["groups"]
    fig = Figure(figsize=(3.6 * len(groups), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    colors = ("#2ca02c", "#1f77b4", "#9467bd", "#ff7f0e", "#d62728")
    x = result["multiples"]
    for ax, (name, g) in zip(axes, groups.items()):
        shares = np.array([[row[t] for t in TYPES] for row in g["shares"]]).T
        ax.stackplot(x, shares, labels=TYPES, colors=colors, alpha=0.85)
        ax.set_xlim(min(x), max(x))
        ax.set_ylim(0, 1)
        ax.set_title(name)
        ax.set_xlabel("top detections / number of objects")
    axes[0].set_ylabel("share of detections")
    axes[-1].legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path

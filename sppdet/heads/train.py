"""Train the detection heads from cached features: SVMs with hard-negative mining, box regression.

Two passes over the training images, pooling each image's windows once per pass:

1. positives: the ground-truth boxes of every image (difficult ones too, by default, as in
   the reference code), kept in memory (float16, optionally a seeded per-class sample);
2. mining: all windows (ground truth + proposals) of each image are pooled once, scored
   against every class's current SVM with one matrix product and mined for hard negatives
   (``HardNegativeMiner``); the same pooled features feed a seeded, bounded sample of box
   regression windows (IoU >= 0.5 with a ground-truth box).

Features are scaled to a mean L2 norm of 20 first. With a fine-tuned fc head, the SVMs
use its fc7 outputs (scaled to a mean norm of 20 in turn) while box regression stays on
the scaled pooled features (R-CNN regressed from pool5 features too).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from sppdet.heads.bbox_regression import BoxRegParams, BoxRegressor, fit_box_regressor
from sppdet.heads.fc_head import FcHead
from sppdet.heads.mining import HardNegativeMiner, MiningParams
from sppdet.heads.model_dir import FEATURE_KEYS, TEST_DEFAULTS, DetectorModel
from sppdet.heads.reservoir import Reservoir
from sppdet.heads.scaling import TARGET_NORM, estimate_scale
from sppdet.heads.sources import FeatureSource, TrainingImage, best_gt, class_overlaps
from sppdet.heads.svm import SVMParams


@dataclass(frozen=True)
class TrainParams:
    """All head-training settings; defaults follow R-CNN / SPP-net."""

    svm: SVMParams = field(default_factory=SVMParams)
    mining: MiningParams = field(default_factory=MiningParams)
    bbox: BoxRegParams | None = field(default_factory=BoxRegParams)  # None: no box regression
    use_difficult: bool = True
    max_positives: int | None = None  # per class; None keeps all
    target_norm: float = TARGET_NORM
    norm_images: int = 200
    norm_windows: int = 200
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainedHeads:
    """What training produced; ``ModelDir`` stores it."""

    svm_W: np.ndarray  # (C, D_svm) float32
    svm_b: np.ndarray  # (C,) float32
    feature_scale: float
    fc7_scale: float | None
    bbox: BoxRegressor | None
    summary: dict

    def to_model(self, classes: Sequence[str], *, fc: FcHead | None = None,
                 features: dict[str, Any] | None = None, proposals: dict[str, Any] | None = None,
                 finetune: dict[str, Any] | None = None) -> DetectorModel:
        """A ``DetectorModel`` with its config: feature and proposal settings (the caches'
        manifests), head, classes, scales, test-time defaults and the training summary."""
        features = dict(features or {})
        config: dict[str, Any] = {
            "head": "pool" if fc is None else "fc7",
            "classes": list(classes),
            "feature_scale": self.feature_scale,
            "fc7_scale": self.fc7_scale,
            # The settings detection must reproduce, copied from the feature cache manifest.
            **{k: features[k] for k in FEATURE_KEYS if k in features},
            "features": features,
            "proposals": dict(proposals or {}),
            "test": dict(TEST_DEFAULTS),
            "training": self.summary,
        }
        if finetune is not None:
            config["finetune"] = finetune
        return DetectorModel(config, self.svm_W, self.svm_b, self.bbox, fc)


def _progress(enabled: bool) -> Callable:
    return (lambda it, **kw: tqdm(it, **kw)) if enabled else (lambda it, **kw: it)


class SvmFeatures:
    """Pooled features -> SVM features: scale, then (head fc7) fc7 outputs scaled again."""

    def __init__(self, feature_scale: float, fc: FcHead | None = None, fc7_scale: float | None = None):
        self.feature_scale = feature_scale
        self.fc = fc
        self.fc7_scale = fc7_scale

    def scaled(self, pooled: np.ndarray) -> np.ndarray:
        return np.asarray(pooled, np.float32) * np.float32(self.feature_scale)

    def from_scaled(self, x: np.ndarray) -> np.ndarray:
        if self.fc is None:
            return x
        assert self.fc7_scale is not None
        return self.fc.fc7_numpy(x) * np.float32(self.fc7_scale)

    def __call__(self, pooled: np.ndarray) -> np.ndarray:
        return self.from_scaled(self.scaled(pooled))


def collect_positives(images: Sequence[TrainingImage], source: FeatureSource, feats: SvmFeatures,
                      num_classes: int, params: TrainParams, progress: bool = True) -> list[np.ndarray]:
    """Pass 1: the SVM features of every class's ground-truth boxes (float16)."""
    rng = np.random.default_rng([params.seed, 1])
    reservoirs: list[Reservoir] = []
    wrap = _progress(progress)
    for i in wrap(range(len(images)), desc="positives", unit="img"):
        ti = images[i]
        sel = np.ones(ti.num_gt, bool) if params.use_difficult else ~ti.gt_difficult
        if not sel.any():
            continue
        x = feats(source.pooled(ti.image_id, ti.gt_boxes[sel]))
        if not reservoirs:
            reservoirs = [Reservoir(x.shape[1], params.max_positives, rng) for _ in range(num_classes)]
        labels = ti.gt_labels[sel]
        for c in np.unique(labels):
            reservoirs[int(c)].add(x[labels == c])
    return [r.arrays()[0] for r in reservoirs]


def train_heads(images: Sequence[TrainingImage], source: FeatureSource, classes: Sequence[str],
                params: TrainParams = TrainParams(), *, fc: FcHead | None = None,
                feature_scale: float | None = None, progress: bool = True) -> TrainedHeads:
    """Train SVMs (with hard-negative mining) and box regressors on ``images``.

    ``fc``: a fine-tuned fc head (``--head fc7``); then ``feature_scale`` must be the one it
    was trained with. Otherwise the scale is estimated here.
    """
    if len(images) == 0:
        raise ValueError("no training images")
    C = len(classes)
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    if feature_scale is None:
        if fc is not None:
            raise ValueError("an fc head needs the feature scale it was trained with")
        feature_scale, mean_norm = estimate_scale(
            images, source, target_norm=params.target_norm, num_images=params.norm_images,
            windows_per_image=params.norm_windows, seed=params.seed)
    else:
        mean_norm = None
    fc7_scale = fc7_norm = None
    if fc is not None:
        fc.eval()
        s = np.float32(feature_scale)
        fc7_scale, fc7_norm = estimate_scale(
            images, source, transform=lambda p: fc.fc7_numpy(p * s), target_norm=params.target_norm,
            num_images=params.norm_images, windows_per_image=params.norm_windows, seed=params.seed)
    feats = SvmFeatures(feature_scale, fc, fc7_scale)
    timing["scale_s"] = time.perf_counter() - t_start

    t0 = time.perf_counter()
    positives = collect_positives(images, source, feats, C, params, progress)
    if not positives:
        raise ValueError("no ground-truth boxes in the training images: nothing to train")
    timing["positives_s"] = time.perf_counter() - t0
    dim = positives[0].shape[1]

    t0 = time.perf_counter()
    miner = HardNegativeMiner(positives, dim, params.mining, params.svm)
    bbox_res: list[Reservoir] | None = None
    pooled_dim: int | None = None
    rng = np.random.default_rng([params.seed, 2])
    bar = _progress(progress)(range(len(images)), desc="mining", unit="img")
    for i in bar:
        ti = images[i]
        windows = ti.windows()
        if len(windows) == 0:
            miner.observe(i, np.zeros((0, dim), np.float32), np.zeros((0, C)))
            continue
        pooled = source.pooled(ti.image_id, windows)
        x_scaled = feats.scaled(pooled)
        x = feats.from_scaled(x_scaled)
        ov = class_overlaps(windows, ti.gt_boxes, ti.gt_labels, C)
        is_gt = np.arange(len(windows)) < ti.num_gt
        miner.observe(i, x, ov, is_gt)
        if params.bbox is not None and ti.num_gt:
            if bbox_res is None:
                pooled_dim = x_scaled.shape[1]
                extras = {"boxes": ((4,), np.float64), "gt": ((4,), np.float64)}
                bbox_res = [Reservoir(pooled_dim, params.bbox.max_per_class, rng, extras=extras)
                            for _ in range(C)]
            iou, arg = best_gt(windows, ti.gt_boxes)
            sel = np.flatnonzero(iou >= params.bbox.min_iou)
            cls = ti.gt_labels[arg[sel]]
            for c in np.unique(cls):
                rows = sel[cls == c]
                bbox_res[int(c)].add(x_scaled[rows], boxes=windows[rows], gt=ti.gt_boxes[arg[rows]])
        if progress and hasattr(bar, "set_postfix"):
            bar.set_postfix(retrains=sum(s.retrains for s in miner.stats),
                            negatives=sum(len(cache) for cache in miner.caches))
    if progress:
        tqdm.write("final SVM retrain, one class at a time")
    W, b = miner.finish()
    timing["mining_s"] = time.perf_counter() - t0

    bbox = None
    bbox_counts: list[int] | None = None
    if params.bbox is not None and bbox_res is not None and pooled_dim is not None:
        t0 = time.perf_counter()
        examples = []
        for r in bbox_res:
            x_b, extra = r.arrays()
            examples.append((x_b, extra["boxes"], extra["gt"]))
        wrap = (lambda it: tqdm(it, desc="box regression", unit="class")) if progress else None
        bbox, bbox_counts = fit_box_regressor(examples, pooled_dim, params.bbox.lam, progress=wrap)
        timing["bbox_s"] = time.perf_counter() - t0
    timing["total_s"] = time.perf_counter() - t_start

    per_class = {}
    for c, name in enumerate(classes):
        d = miner.stats[c].as_dict()
        d["trained"] = bool(np.isfinite(b[c]))
        if bbox_counts is not None:
            d["bbox_windows"] = bbox_counts[c]
        per_class[name] = d
    summary = {
        "images": len(images),
        "feature_dim": dim,
        "feature_scale": feature_scale,
        "mean_norm": mean_norm,
        "fc7_scale": fc7_scale,
        "fc7_mean_norm": fc7_norm,
        "positives": int(sum(len(p) for p in positives)),
        "negatives_kept": int(sum(len(cache) for cache in miner.caches)),
        "mining_rounds": int(sum(s.retrains for s in miner.stats)),
        "not_converged": int(sum(s.not_converged for s in miner.stats)),
        "untrained_classes": [n for n, d in per_class.items() if not d["trained"]],
        "seconds": {k: round(v, 2) for k, v in timing.items()},
        "per_class": per_class,
        "params": params.as_dict(),
    }
    return TrainedHeads(W, b, float(feature_scale), None if fc7_scale is None else float(fc7_scale),
                        bbox, summary)


def summary_table(summary: dict) -> str:
    """A per-class table and a totals line of a ``train_heads`` summary."""
    rows = summary["per_class"]
    width = max([5] + [len(n) for n in rows])
    cols = ("positives", "negatives_kept", "negatives_added", "negatives_evicted", "retrains", "fit_seconds")
    head = ["pos", "neg kept", "neg added", "evicted", "rounds", "fit s"]
    has_bbox = any("bbox_windows" in r for r in rows.values())
    if has_bbox:
        cols, head = cols + ("bbox_windows",), head + ["bbox win"]
    lines = [f"{'class':<{width}}  " + "  ".join(f"{h:>9}" for h in head)]
    for name, r in rows.items():
        cells = [f"{r[c]:>9.1f}" if isinstance(r[c], float) else f"{r[c]:>9}" for c in cols]
        flag = "" if r["trained"] else "  (untrained: no positives or negatives)"
        lines.append(f"{name:<{width}}  " + "  ".join(cells) + flag)
    sec = summary["seconds"]
    lines.append(
        f"{summary['images']} images, {summary['positives']} positives, "
        f"{summary['negatives_kept']} negatives kept, {summary['mining_rounds']} mining rounds "
        f"({summary['not_converged']} not converged), feature dim {summary['feature_dim']}, "
        f"{sec['total_s']:.0f} s (positives {sec['positives_s']:.0f}, mining {sec['mining_s']:.0f}"
        + (f", box regression {sec['bbox_s']:.0f}" if "bbox_s" in sec else "") + ")")
    return "\n".join(lines)

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

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from sppdet.heads.bbox_regression import BoxRegParams, BoxRegressor, fit_box_regressor
from sppdet.heads.checkpoint import MINING_FILE, POSITIVES_FILE, TrainCheckpoint, fingerprint, repool
from sppdet.heads.fc_head import FcHead
from sppdet.heads.mining import HardNegativeMiner, MiningParams
from sppdet.heads.model_dir import FEATURE_KEYS, TEST_DEFAULTS, DetectorModel
from sppdet.heads.reservoir import Reservoir
from sppdet.heads.scaling import NORM_IMAGES, NORM_WINDOWS, TARGET_NORM, estimate_scale
from sppdet.heads.sources import FeatureSource, TrainingImage, best_gt, class_overlaps
from sppdet.heads.svm import SVMParams
from sppdet.errors import ArgumentError, DataError


# Images of the mining pass between two resumable checkpoints.
CHECKPOINT_EVERY = 200


@dataclass(frozen=True)
class TrainParams:
    """All head-training settings; defaults follow R-CNN / SPP-net."""

    svm: SVMParams = field(default_factory=SVMParams)
    mining: MiningParams = field(default_factory=MiningParams)
    bbox: BoxRegParams | None = field(default_factory=BoxRegParams)  # None: no box regression
    use_difficult: bool = True
    max_positives: int | None = None  # per class; None keeps all
    target_norm: float = TARGET_NORM
    norm_images: int = NORM_IMAGES
    norm_windows: int = NORM_WINDOWS
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainedHeads:
    """What training produced; ``to_model`` and ``save_model`` make a model directory of it."""

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


class BoxSampler:
    """Pass 2's box-regression windows: per class, a seeded bounded sample of windows with
    IoU >= ``min_iou`` to a ground-truth box (scaled pooled features, boxes, targets' boxes)."""

    def __init__(self, num_classes: int, params: BoxRegParams, rng: np.random.Generator) -> None:
        self.C, self.params, self.rng = num_classes, params, rng
        self.res: list[Reservoir] | None = None

    def _make(self, dim: int) -> None:
        extras = {"boxes": ((4,), np.float64), "gt": ((4,), np.float64), "keys": ((2,), np.int64)}
        self.res = [Reservoir(dim, self.params.max_per_class, self.rng, extras=extras)
                    for _ in range(self.C)]

    def add(self, image_index: int, ti: TrainingImage, windows: np.ndarray, x_scaled: np.ndarray) -> None:
        if ti.num_gt == 0:
            return
        if self.res is None:
            self._make(x_scaled.shape[1])
        assert self.res is not None
        iou, arg = best_gt(windows, ti.gt_boxes)
        sel = np.flatnonzero(iou >= self.params.min_iou)
        cls = ti.gt_labels[arg[sel]]
        for c in np.unique(cls):
            rows = sel[cls == c]
            keys = np.stack([np.full(len(rows), image_index, np.int64), rows.astype(np.int64)], 1)
            self.res[int(c)].add(x_scaled[rows], boxes=windows[rows], gt=ti.gt_boxes[arg[rows]], keys=keys)

    def examples(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
        if self.res is None:
            return None
        out = []
        for r in self.res:
            x, extra = r.arrays()
            out.append((x, extra["boxes"], extra["gt"]))
        return out

    def state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"bbox_rng": np.array(json.dumps(self.rng.bit_generator.state))}
        if self.res is not None:
            out["bbox_seen"] = np.array([r.seen for r in self.res])
            for c, r in enumerate(self.res):
                _, extra = r.arrays()
                for k, v in extra.items():
                    out[f"bbox_{k}_{c}"] = v
        return out

    def restore(self, state: dict[str, np.ndarray], feats: list[np.ndarray], dim: int) -> None:
        self.rng.bit_generator.state = json.loads(str(state["bbox_rng"]))
        if "bbox_seen" not in state:
            return
        self._make(dim)
        assert self.res is not None
        for c, r in enumerate(self.res):
            extras = {k: state[f"bbox_{k}_{c}"] for k in ("boxes", "gt", "keys")}
            r.restore(feats[c].reshape(-1, dim), extras, int(state["bbox_seen"][c]))


def train_heads(images: Sequence[TrainingImage], source: FeatureSource, classes: Sequence[str],
                params: TrainParams = TrainParams(), *, fc: FcHead | None = None,
                feature_scale: float | None = None, progress: bool = True,
                checkpoint_dir: str | Path | None = None, checkpoint_every: int = CHECKPOINT_EVERY,
                fingerprint_extra: dict[str, Any] | None = None,
                keep_checkpoint: bool = False) -> TrainedHeads:
    """Train SVMs (with hard-negative mining) and box regressors on ``images``.

    ``fc``: a fine-tuned fc head (``--head fc7``); then ``feature_scale`` must be the one it
    was trained with. Otherwise the scale is estimated here. With ``checkpoint_dir``, the
    run saves its state after pass 1 and every ``checkpoint_every`` images of pass 2, and
    resumes from a checkpoint found there (made with the same settings, data and
    ``fingerprint_extra``, e.g. the caches' settings); the folder is removed at the end,
    unless ``keep_checkpoint`` (the caller removes it once the model is saved).
    """
    if len(images) == 0:
        raise DataError("no training images (the id list is empty)")
    if fc is not None and feature_scale is None:
        raise ArgumentError("an fc head needs the feature scale it was trained with")
    C = len(classes)
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    ckpt = None
    if checkpoint_dir is not None:
        ids = getattr(images, "ids", None) or [images[i].image_id for i in range(len(images))]
        fc_bytes = b"" if fc is None else b"".join(
            v.detach().cpu().numpy().tobytes() for v in fc.state_dict().values())
        ckpt = TrainCheckpoint(checkpoint_dir, fingerprint(
            params=params.as_dict(), classes=list(classes), ids=list(ids), fc=fc_bytes,
            feature_scale=feature_scale, extra=fingerprint_extra or {}))

    # Stage 1: feature scale(s) and positives.
    saved = ckpt.load_positives() if ckpt is not None else None
    if saved is not None:
        feature_scale = float(saved["feature_scale"])
        mean_norm = float(saved["mean_norm"]) if np.isfinite(saved["mean_norm"]) else None
        fc7_scale = float(saved["fc7_scale"]) if np.isfinite(saved["fc7_scale"]) else None
        fc7_norm = float(saved["fc7_norm"]) if np.isfinite(saved["fc7_norm"]) else None
        positives = [saved[f"pos_{c}"] for c in range(C)]
        if progress:
            tqdm.write(f"resuming: positives and feature scale from {ckpt.dir}")
    else:
        mean_norm = None
        if feature_scale is None:
            feature_scale, mean_norm = estimate_scale(
                images, source, target_norm=params.target_norm, num_images=params.norm_images,
                windows_per_image=params.norm_windows, seed=params.seed)
        fc7_scale = fc7_norm = None
        if fc is not None:
            fc.eval()
            s = np.float32(feature_scale)
            fc7_scale, fc7_norm = estimate_scale(
                images, source, transform=lambda p: fc.fc7_numpy(p * s), target_norm=params.target_norm,
                num_images=params.norm_images, windows_per_image=params.norm_windows, seed=params.seed)
        timing["scale_s"] = time.perf_counter() - t_start
        t0 = time.perf_counter()
        positives = collect_positives(images, source, SvmFeatures(feature_scale, fc, fc7_scale),
                                      C, params, progress)
        if not positives:
            raise DataError("no ground-truth boxes in the training images: nothing to train")
        timing["positives_s"] = time.perf_counter() - t0
        if ckpt is not None:
            nan = np.nan
            ckpt.save(POSITIVES_FILE, {
                "feature_scale": np.array(feature_scale),
                "mean_norm": np.array(nan if mean_norm is None else mean_norm),
                "fc7_scale": np.array(nan if fc7_scale is None else fc7_scale),
                "fc7_norm": np.array(nan if fc7_norm is None else fc7_norm),
                **{f"pos_{c}": p for c, p in enumerate(positives)}})
    feats = SvmFeatures(feature_scale, fc, fc7_scale)
    dim = positives[0].shape[1]

    # Stage 2: one mining pass, box-regression windows on the side.
    t0 = time.perf_counter()
    miner = HardNegativeMiner(positives, dim, params.mining, params.svm)
    sampler = BoxSampler(C, params.bbox, np.random.default_rng([params.seed, 2])) if params.bbox else None
    start = 0
    state = ckpt.load_mining() if ckpt is not None else None
    if state is not None:
        start = int(state["next_image"])
        neg_keys = [state[f"keys_{c}"] for c in range(C)]
        box_keys = [state.get(f"bbox_keys_{c}", np.zeros((0, 2), np.int64)) for c in range(C)]
        wrap = (lambda it: tqdm(it, desc="restoring the working set", unit="img")) if progress else None
        got = repool(images, source, [(k, feats) for k in neg_keys] + [(k, feats.scaled) for k in box_keys],
                     progress=wrap)
        miner.restore(state, [g.reshape(-1, dim) for g in got[:C]])
        box_dims = [g.shape[1] for g in got[C:] if g.shape[1]]
        if sampler is not None and box_dims:
            sampler.restore(state, [g.reshape(-1, box_dims[0]) for g in got[C:]], box_dims[0])
        if progress:
            tqdm.write(f"resuming mining at image {start} of {len(images)}")
    bar = _progress(progress)(range(start, len(images)), desc="mining", unit="img",
                              initial=start, total=len(images))
    for i in bar:
        ti = images[i]
        windows = ti.windows()
        if len(windows) == 0:
            miner.observe(i, np.zeros((0, dim), np.float32), np.zeros((0, C)))
        else:
            x_scaled = feats.scaled(source.pooled(ti.image_id, windows))
            ov = class_overlaps(windows, ti.gt_boxes, ti.gt_labels, C)
            miner.observe(i, feats.from_scaled(x_scaled), ov, np.arange(len(windows)) < ti.num_gt)
            if sampler is not None:
                sampler.add(i, ti, windows, x_scaled)
        if progress and hasattr(bar, "set_postfix"):
            bar.set_postfix(retrains=sum(s.retrains for s in miner.stats),
                            negatives=sum(len(cache) for cache in miner.caches))
        if ckpt is not None and (i + 1) % checkpoint_every == 0 and i + 1 < len(images):
            ckpt.save(MINING_FILE, {"next_image": np.array(i + 1), **miner.state(),
                                    **(sampler.state() if sampler is not None else {})})
    W, b = miner.finish((lambda it: tqdm(it, desc="final SVMs", unit="class")) if progress else None)
    timing["mining_s"] = time.perf_counter() - t0

    bbox = None
    bbox_counts: list[int] | None = None
    examples = sampler.examples() if sampler is not None else None
    if examples is not None and params.bbox is not None:
        t0 = time.perf_counter()
        wrap = (lambda it: tqdm(it, desc="box regression", unit="class")) if progress else None
        bbox, bbox_counts = fit_box_regressor(examples, examples[0][0].shape[1], params.bbox.lam,
                                              progress=wrap)
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
        "resumed_at_image": start if state is not None else None,
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
    heads = TrainedHeads(W, b, float(feature_scale), None if fc7_scale is None else float(fc7_scale),
                         bbox, summary)
    if ckpt is not None and not keep_checkpoint:
        ckpt.remove()
    return heads


# Below this share of training positives scoring above 0, summary_table flags a class.
COLLAPSE_WARNING_SHARE = 0.25


def summary_table(summary: dict) -> str:
    """A per-class table and a totals line of a ``train_heads`` summary."""
    rows = summary["per_class"]
    width = max([5] + [len(n) for n in rows])
    cols = ("positives", "negatives_kept", "negatives_added", "negatives_evicted", "retrains", "fit_seconds",
            "positives_above_zero", "svm_c")
    head = ["pos", "neg kept", "neg added", "evicted", "rounds", "fit s", "pos > 0", "C"]
    has_bbox = any("bbox_windows" in r for r in rows.values())
    if has_bbox:
        cols, head = cols + ("bbox_windows",), head + ["bbox win"]
    lines = [f"{'class':<{width}}  " + "  ".join(f"{h:>9}" for h in head)]
    warnings = []
    for name, r in rows.items():
        cells = []
        for c in cols:
            v = r.get(c, -1.0)
            if c == "positives_above_zero":
                cells.append(f"{100 * v:>8.0f}%" if v >= 0 else f"{'-':>9}")
            elif c == "svm_c":
                cells.append(f"{v:>9.3g}" + ("*" if r.get("c_boosts") else ""))
            else:
                cells.append(f"{v:>9.1f}" if isinstance(v, float) else f"{v:>9}")
        flag = "" if r["trained"] else "  (untrained: no positives or negatives)"
        lines.append(f"{name:<{width}}  " + "  ".join(cells) + flag)
        share = r.get("positives_above_zero", -1.0)
        if r["trained"] and 0 <= share < COLLAPSE_WARNING_SHARE:
            warnings.append(f"Warning: {name}: only {100 * share:.0f}% of its training positives score "
                            f"above 0 (at C = {r.get('svm_c', 0):.3g}); if its AP on held-out images is "
                            f"near 0, the SVM has collapsed to its bias: try a larger --svm-c")
        elif r.get("c_boosts"):
            warnings.append(f"Note: {name}: its SVM collapsed to its bias at the run's C; C was raised "
                            f"to {r['svm_c']:.3g} for this class (* in the table)")
    sec = summary["seconds"]
    lines.append(
        f"{summary['images']} images, {summary['positives']} positives, "
        f"{summary['negatives_kept']} negatives kept, {summary['mining_rounds']} mining rounds "
        f"({summary['not_converged']} not converged), feature dim {summary['feature_dim']}, "
        f"{sec['total_s']:.0f} s (" + ", ".join(
            f"{name} {sec[key]:.0f}" for name, key in (("positives", "positives_s"), ("mining", "mining_s"),
                                                       ("box regression", "bbox_s")) if key in sec) + ")"
        + (f", resumed at image {summary['resumed_at_image']}" if summary.get("resumed_at_image") else ""))
    return "\n".join(lines + warnings)

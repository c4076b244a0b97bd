"""Fine-tune the fc layers on cached pooled features (SPP-net, section 4 "fine-tuning").

Windows overlapping a ground-truth box by IoU >= 0.5 are foreground, labelled with the
class of their best box; IoU in [0.1, 0.5) is background (label 0). Mini-batches of 128
hold 25% foreground. Pooling from the cache is the expensive step, so each image is
visited once: a seeded sample of its windows (by default up to 16 foreground and 48
background) is pooled, scaled and kept in memory as float16 (``WindowPool``); training
then draws mini-batches from that pool. Batches are a pure function of (seed, iteration),
so a run resumed from a checkpoint continues exactly as an uninterrupted one.

Unlike SPP-net, whose fc6/fc7 started from ImageNet-trained layers, these layers start from
scratch on pooled features whose common mean dominates their norm; plain SGD then learns
very slowly. By default the inputs are standardised per dimension (mean and deviation of
the pool) during training, and the standardisation is folded into fc6 afterwards, so the
saved layers take scaled pooled features like the SVMs (``standardise=False`` to turn off).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sppdet.errors import DataError
from sppdet.heads.fc_head import FcHead
from sppdet.heads.safe_checkpoint import (load_training_checkpoint, refuse_pickled_checkpoint,
                                          save_training_checkpoint)
from sppdet.heads.sources import FeatureSource, TrainingImage, best_gt


# Iterations between two resumable checkpoints of ``train_fc``.
CHECKPOINT_EVERY = 500


@dataclass(frozen=True)
class FcTrainingParams:
    """The settings both fine-tunings share: the new fc layers (trained from scratch), the
    labelling of windows, the foreground share of a mini-batch and SGD. ``FinetuneParams``
    (fc layers on cached pooled features) and ``heads.conv_finetune.ConvFinetuneParams``
    (conv top + fc layers through SPP) add their batch composition and schedule."""

    hidden: int = 1024  # width of fc6 and fc7 (the paper: 4096)
    dropout: float = 0.5
    fg_iou: float = 0.5  # foreground: IoU >= this with a ground-truth box
    bg_iou_low: float = 0.1  # background: IoU in [this, fg_iou)
    fg_fraction: float = 0.25  # foreground share of a mini-batch
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FinetuneParams(FcTrainingParams):
    """Fine-tuning settings. Sizes and schedule are CPU-friendly defaults (the paper used
    4096-wide fc layers and 250k + 50k iterations at 1e-4 / 1e-5 on a GPU, starting from
    pre-trained fc layers; these are trained from scratch)."""

    batch_size: int = 128
    fg_per_image: int = 16
    bg_per_image: int = 48
    iterations: int = 4000
    lr_step: int = 3000  # lr drops 10x here
    standardise: bool = True
    init_std: float | None = None


@dataclass
class WindowPool:
    """Sampled training windows: scaled pooled features and labels (0 = background)."""

    x: np.ndarray  # (M, D) float16
    labels: np.ndarray  # (M,) int64
    image_index: np.ndarray  # (M,) int64

    @property
    def num_fg(self) -> int:
        return int((self.labels > 0).sum())


def sample_image_windows(ti: TrainingImage, index: int, params: FinetuneParams) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of one image's fg and bg windows: (boxes (k, 4), labels (k,))."""
    windows = ti.windows()
    iou, arg = best_gt(windows, ti.gt_boxes)
    fg = np.flatnonzero(iou >= params.fg_iou)
    bg = np.flatnonzero((iou >= params.bg_iou_low) & (iou < params.fg_iou))
    rng = np.random.default_rng([params.seed, 3, index])
    fg = np.sort(rng.choice(fg, size=min(len(fg), params.fg_per_image), replace=False))
    bg = np.sort(rng.choice(bg, size=min(len(bg), params.bg_per_image), replace=False))
    rows = np.concatenate([fg, bg])
    labels = np.concatenate([ti.gt_labels[arg[fg]] + 1, np.zeros(len(bg), np.int64)]).astype(np.int64)
    return windows[rows], labels


def build_window_pool(images: Sequence[TrainingImage], source: FeatureSource, feature_scale: float,
                      params: FinetuneParams, progress: bool = True) -> WindowPool:
    """Pool each image's sampled windows once; keep them scaled, as float16."""
    xs, ys, idx = [], [], []
    it = range(len(images))
    for i in (tqdm(it, desc="window pool", unit="img") if progress else it):
        ti = images[i]
        boxes, labels = sample_image_windows(ti, i, params)
        if len(boxes) == 0:
            continue
        x = np.asarray(source.pooled(ti.image_id, boxes), np.float32) * np.float32(feature_scale)
        xs.append(x.astype(np.float16))
        ys.append(labels)
        idx.append(np.full(len(labels), i, np.int64))
    if not xs:
        raise DataError("fine-tuning: no foreground or background windows in the training images")
    pool = WindowPool(np.concatenate(xs), np.concatenate(ys), np.concatenate(idx))
    if pool.num_fg == 0 or pool.num_fg == len(pool.labels):
        raise DataError(f"fine-tuning needs foreground and background windows; the pool has "
                        f"{pool.num_fg} foreground of {len(pool.labels)}")
    return pool


class SeededStream:
    """Position k of an endless stream over n items: epoch k // n, item perm_epoch[k % n]."""

    def __init__(self, n: int, seed: int, tag: int) -> None:
        self.n, self.seed, self.tag = n, seed, tag
        self._cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = np.random.default_rng([self.seed, self.tag, epoch]).permutation(self.n)
        return self._cache[epoch]

    def take(self, start: int, count: int) -> np.ndarray:
        pos = np.arange(start, start + count, dtype=np.int64)
        epochs, offsets = pos // self.n, pos % self.n
        out = np.empty(count, np.int64)
        for e in np.unique(epochs):
            m = epochs == e
            out[m] = self._perm(int(e))[offsets[m]]
        return out


def batch_indices(pool: WindowPool, params: FinetuneParams, iteration: int,
                  streams: tuple[SeededStream, SeededStream] | None = None) -> np.ndarray:
    """Pool rows of mini-batch ``iteration``: ``fg_fraction`` foreground, the rest background."""
    fg_rows = np.flatnonzero(pool.labels > 0)
    bg_rows = np.flatnonzero(pool.labels == 0)
    fg_s, bg_s = streams or (SeededStream(len(fg_rows), params.seed, 5),
                             SeededStream(len(bg_rows), params.seed, 6))
    n_fg = int(round(params.batch_size * params.fg_fraction))
    n_bg = params.batch_size - n_fg
    return np.concatenate([fg_rows[fg_s.take(iteration * n_fg, n_fg)],
                           bg_rows[bg_s.take(iteration * n_bg, n_bg)]])


def input_moments(x: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation of the pool (float64 sums, in chunks);
    tiny deviations are floored at 1e-3 x the median one."""
    s = np.zeros(x.shape[1])
    ss = np.zeros(x.shape[1])
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk].astype(np.float64)
        s += part.sum(0)
        ss += (part * part).sum(0)
    mean = s / len(x)
    std = np.sqrt(np.maximum(ss / len(x) - mean * mean, 0))
    std = np.maximum(std, 1e-3 * np.median(std) + 1e-12)
    return mean.astype(np.float32), std.astype(np.float32)


def _lr_at(params: FinetuneParams, iteration: int) -> float:
    return params.lr * (0.1 if iteration >= params.lr_step else 1.0)


def train_fc(pool: WindowPool, num_classes: int, params: FinetuneParams = FinetuneParams(), *,
             device: str | torch.device = "cpu", checkpoint: str | Path | None = None,
             checkpoint_every: int = CHECKPOINT_EVERY, stop_after: int | None = None,
             progress: bool = True) -> tuple[FcHead, dict]:
    """Train an ``FcHead`` on the pool; resumes from ``checkpoint`` (an .npz written by
    ``safe_checkpoint``, never a pickle) when it exists.

    ``stop_after`` ends the run (with a checkpoint) after that many iterations in total,
    as an interruption would. Returns the head (eval mode, on CPU) and a summary.
    """
    device = torch.device(device)
    torch.manual_seed(params.seed)
    fc = FcHead(pool.x.shape[1], params.hidden, num_classes, params.dropout, params.init_std).to(device)
    if params.standardise:  # trained on standardised inputs, folded into fc6 at the end
        mean_np, std_np = input_moments(pool.x)
        mean, std = torch.from_numpy(mean_np).to(device), torch.from_numpy(std_np).to(device)
    opt = torch.optim.SGD(fc.parameters(), lr=params.lr, momentum=params.momentum,
                          weight_decay=params.weight_decay)
    start, losses, running = 0, [], None
    ckpt = Path(checkpoint) if checkpoint is not None else None
    settings = {"params": params.as_dict(), "pool_size": int(len(pool.labels)), "num_classes": num_classes}
    if ckpt is not None:
        refuse_pickled_checkpoint(ckpt)
    if ckpt is not None and ckpt.is_file():
        meta = load_training_checkpoint(ckpt, fc, opt, expect=settings)
        start, losses = int(meta["iteration"]), [float(v) for v in meta["losses"]]
        running = meta.get("running_loss")

    def save_checkpoint(iteration: int) -> None:
        if ckpt is not None:
            save_training_checkpoint(ckpt, model=fc, optimizer=opt,
                                     meta={**settings, "iteration": iteration, "losses": losses,
                                           "running_loss": running})

    fg_rows, bg_rows = np.flatnonzero(pool.labels > 0), np.flatnonzero(pool.labels == 0)
    streams = (SeededStream(len(fg_rows), params.seed, 5), SeededStream(len(bg_rows), params.seed, 6))
    loss_fn = nn.CrossEntropyLoss()
    end = params.iterations if stop_after is None else min(params.iterations, stop_after)
    fc.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, end), desc="fine-tuning", unit="it", initial=start,
               total=params.iterations) if progress else range(start, end)
    for t in bar:
        for g in opt.param_groups:
            g["lr"] = _lr_at(params, t)
        rows = batch_indices(pool, params, t, streams)
        x = torch.from_numpy(pool.x[rows].astype(np.float32)).to(device)
        if params.standardise:
            x = (x - mean) / std
        y = torch.from_numpy(pool.labels[rows]).to(device)
        loss = loss_fn(fc(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        if (t + 1) % 100 == 0:
            losses.append(round(running, 4))
            if progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{running:.3f}", lr=_lr_at(params, t))
        if (t + 1) % checkpoint_every == 0 and t + 1 < end:
            save_checkpoint(t + 1)
    seconds = time.perf_counter() - t0
    if end < params.iterations:
        save_checkpoint(end)
    if params.standardise:
        fc.fold_input_standardisation(mean, std)
    fc = fc.cpu().eval()
    summary = {"iterations_run": end - start, "iterations": end, "seconds": round(seconds, 2),
               "loss_every_100": losses, "pool_windows": int(len(pool.labels)),
               "pool_foreground": pool.num_fg, **pool_accuracy(fc, pool)}
    return fc, summary


@torch.no_grad()
def pool_accuracy(fc: FcHead, pool: WindowPool, batch: int = 4096) -> dict:
    """Training-pool accuracy of the (C + 1)-way classifier, foreground and background."""
    fc.eval()
    pred = np.empty(len(pool.labels), np.int64)
    for s in range(0, len(pred), batch):
        pred[s:s + batch] = fc(torch.from_numpy(pool.x[s:s + batch].astype(np.float32))).argmax(1).numpy()
    fg = pool.labels > 0
    ok = pred == pool.labels
    return {"pool_fg_accuracy": round(float(ok[fg].mean()), 4) if fg.any() else None,
            "pool_bg_accuracy": round(float(ok[~fg].mean()), 4) if (~fg).any() else None}

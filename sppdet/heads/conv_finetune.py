"""Fine-tune the conv layers above the cache together with fc6/fc7, through SPP.

The capability SPP-net lacked (Fast R-CNN's main gain): the upper conv blocks
(``features.conv_top.ConvTop``) run on each image's cached lower-layer map, their output
is pooled by the spatial pyramid for each sampled window, and the loss back-propagates
through every bin's max into the conv weights. No image is decoded and the frozen lower
layers never run again, which is what makes this practical on two CPU cores.

A mini-batch (Fast R-CNN's recipe) is ``images_per_batch`` images x ``rois_per_image``
windows, 25% foreground (IoU >= 0.5 with a ground-truth box, labelled with its class) and
the rest background (IoU in [0.1, 0.5), label 0). Each window is pooled at the scale where
detection pools it (area nearest 224 x 224): per image, one cached scale is drawn at
random among those that hold foreground windows, and only windows whose own scale it is
are sampled. So each image costs one pass of the conv top, not one per scale, and every
trained window sees exactly the features detection will give it.

The loss is Fast R-CNN's multi-task loss: log loss over the classes plus background, and
smooth-L1 on the class-specific box deltas of foreground windows (targets divided by
``BBOX_STDS``), so the same network gives a softmax classifier and box regression. Its
fc7 can also feed the paper's SVMs (``sppdet train-svm --head fc7``).

The fc layers start from scratch; their input is standardised per dimension with
moments measured once on the initial conv top (a fixed affine map, folded into fc6 at the
end, so the saved layers take raw pooled features).

With ``flip``, each sampled image is used mirrored left-right with probability 1/2 (Fast
R-CNN's only augmentation): its maps are those of the mirrored image, cached by ``sppdet
extract --flip`` (mirroring a map is not the map of the mirrored image), and its
proposals and ground truth are mirrored with it.

Every mini-batch is a pure function of (seed, iteration) and the dropout RNG is saved in
the checkpoint (``.npz`` + JSON, no pickle), so a resumed run continues exactly as an
uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from sppdet.boxes import mirror_boxes
from sppdet.errors import DataError
from sppdet.features.cache import FeatureCache
from sppdet.features.conv_top import ConvTop
from sppdet.features.mapping import map_windows, scale_boxes
from sppdet.features.pyramid import nearest_scale
from sppdet.features.spp import DEFAULT_LEVELS, SpatialPyramidPooling
from sppdet.heads.bbox_regression import bbox_targets
from sppdet.heads.fc_head import FcHead
from sppdet.heads.finetune import FcTrainingParams, SeededStream, input_moments
from sppdet.heads.scoring import BBOX_STDS
from sppdet.heads.safe_checkpoint import load_training_checkpoint, save_training_checkpoint
from sppdet.heads.sources import TrainingImage, best_gt

# Box-delta targets are divided by these (Fast R-CNN's BBOX_NORMALIZE_STDS).


@dataclass(frozen=True)
class ConvFinetuneParams(FcTrainingParams):
    """Settings of conv + fc fine-tuning (defaults: the measured recipe, docs/heads.md); the
    fc layers, window labels and SGD settings are ``FcTrainingParams``'s (``lr`` is the fc
    layers' rate)."""

    train_top: bool = True  # False: the deeper layer's features without conv fine-tuning
    images_per_batch: int = 2
    rois_per_image: int = 64
    iterations: int = 5000
    top_lr_mult: float = 0.1  # the conv top's rate is lr x this (pre-trained layers)
    lr_step: int = 3750  # both rates drop 10x here
    bbox_loss_weight: float = 1.0
    scales: tuple[int, ...] | None = None  # train on these cached scales only (None: all)
    flip: bool = False  # each image mirrored left-right with probability 1/2 (cached maps)
    moment_images: int = 100  # images sampled for the input standardisation

    def as_dict(self) -> dict[str, Any]:
        d = super().as_dict()
        d["scales"] = None if self.scales is None else list(self.scales)
        return d


@dataclass
class WindowSample:
    """One image's sampled training windows at one scale."""

    scale_index: int
    boxes: np.ndarray  # (k, 4) internal boxes, original pixels
    labels: np.ndarray  # (k,) int64, 0 = background
    targets: np.ndarray  # (k, 4) normalised box-delta targets (zeros for background)


def sample_windows(ti: TrainingImage, factors: np.ndarray, allowed: Sequence[int],
                   params: ConvFinetuneParams, rng: np.random.Generator) -> WindowSample | None:
    """Draw a scale and up to ``rois_per_image`` windows pooled at it (None: nothing usable).

    ``factors`` (S, 2) are the image's resize factors per cached scale; ``allowed`` the
    indices of the scales training may use. Windows keep the scale detection gives them
    (nearest 224 x 224 among the allowed scales).
    """
    windows = ti.windows()
    if len(windows) == 0:
        return None
    allowed = np.asarray(allowed, np.int64)
    which = allowed[nearest_scale(windows, factors[allowed])]
    iou, arg = best_gt(windows, ti.gt_boxes)
    is_fg = iou >= params.fg_iou
    is_bg = (iou >= params.bg_iou_low) & ~is_fg
    with_fg = np.unique(which[is_fg])
    with_any = np.unique(which[is_fg | is_bg])
    if len(with_any) == 0:
        return None
    s = int(rng.choice(with_fg if len(with_fg) else with_any))
    fg = np.flatnonzero(is_fg & (which == s))
    bg = np.flatnonzero(is_bg & (which == s))
    n_fg = min(len(fg), int(round(params.rois_per_image * params.fg_fraction)))
    n_bg = min(len(bg), params.rois_per_image - n_fg)
    fg = np.sort(rng.choice(fg, size=n_fg, replace=False))
    bg = np.sort(rng.choice(bg, size=n_bg, replace=False))
    rows = np.concatenate([fg, bg])
    labels = np.concatenate([ti.gt_labels[arg[fg]] + 1, np.zeros(n_bg, np.int64)]).astype(np.int64)
    targets = np.zeros((len(rows), 4), np.float32)
    if n_fg:
        t = bbox_targets(windows[fg], ti.gt_boxes[arg[fg]]) / np.asarray(BBOX_STDS)
        targets[:n_fg] = t
    return WindowSample(s, windows[rows], labels, targets)


def pool_sample(top: ConvTop, spp: SpatialPyramidPooling, fmap: torch.Tensor, factors: np.ndarray,
                sample: WindowSample) -> torch.Tensor:
    """Run the conv top on one cached map and pool the sample's windows: (k, D) float32,
    differentiable with respect to the top's parameters."""
    out = top.apply_to_map(fmap)
    scaled = scale_boxes(sample.boxes, factors[sample.scale_index])
    cells = map_windows(scaled, top.stride, top.offset, tuple(out.shape[1:])).to(out.device)
    return spp(out, cells)


@dataclass
class ConvFinetuneResult:
    top: ConvTop
    fc: FcHead
    summary: dict[str, Any] = field(default_factory=dict)


class ConvFinetuner:
    """Trains a ``ConvTop`` and an ``FcHead`` (with box deltas) on cached maps."""

    def __init__(self, images: Sequence[TrainingImage], cache: FeatureCache, top: ConvTop,
                 num_classes: int, params: ConvFinetuneParams = ConvFinetuneParams(),
                 device: str | torch.device = "cpu", levels: Sequence[int] = DEFAULT_LEVELS) -> None:
        if len(images) == 0:
            raise DataError("conv fine-tuning: no training images")
        if not 0 < params.fg_fraction < 1:
            raise DataError(f"fg_fraction must be in (0, 1), got {params.fg_fraction}")
        self.images, self.cache, self.params = images, cache, params
        self.device = torch.device(device)
        self.num_classes = num_classes
        cached = [int(s) for s in cache.config["scales"]]
        if params.scales is None:
            self.allowed = list(range(len(cached)))
        else:
            missing = [s for s in params.scales if s not in cached]
            if missing:
                raise DataError(f"scales {missing} are not in the feature cache {cache.dir} "
                                f"(it has {cached})")
            self.allowed = [cached.index(s) for s in params.scales]
        self.top = top.to(self.device)
        # A new 1x1 reduction (if any) is trained like the fc layers, even with a frozen top.
        reduce = self.top.layers.reduce if hasattr(self.top.layers, "reduce") else None
        new_params = [] if reduce is None else list(reduce.parameters())
        new_ids = {id(p) for p in new_params}
        pretrained = [p for p in self.top.parameters() if id(p) not in new_ids]
        for p in pretrained:
            p.requires_grad_(params.train_top)
        for p in new_params:
            p.requires_grad_(True)
        self.spp = SpatialPyramidPooling(levels)
        torch.manual_seed(params.seed)
        self.fc = FcHead(self.spp.output_dim(top.channels), params.hidden, num_classes,
                         params.dropout, bbox=True).to(self.device)
        groups = [{"params": list(self.fc.parameters()) + new_params, "lr_mult": 1.0}]
        if params.train_top:
            groups.append({"params": pretrained, "lr_mult": params.top_lr_mult})
        self.opt = torch.optim.SGD(groups, lr=params.lr, momentum=params.momentum,
                                   weight_decay=params.weight_decay)
        self.order = SeededStream(len(images), params.seed, 11)
        self.mean = self.std = None
        if params.flip:
            missing = [ti.image_id for ti in images if not cache.has(ti.image_id, flipped=True)]
            if missing:
                raise DataError(f"{cache.dir}: no mirrored maps for {len(missing)} of {len(images)} "
                                f"training images (first: {', '.join(missing[:3])}); run `sppdet "
                                f"extract --flip` on the same images, or train without --flip")

    # -- sampling ---------------------------------------------------------------------
    def _sample(self, iteration: int, slot: int) -> tuple[TrainingImage, Any, WindowSample | None]:
        index = int(self.order.take(iteration * self.params.images_per_batch + slot, 1)[0])
        ti = self.images[index]
        rng = np.random.default_rng([self.params.seed, 13, iteration, slot])
        flipped = self.params.flip and bool(np.random.default_rng([self.params.seed, 23, iteration, slot])
                                            .integers(2))
        maps = self.cache.load_maps(ti.image_id, flipped=flipped)
        if flipped:
            ti = mirrored(ti, maps.image_hw[1])
        return ti, maps, sample_windows(ti, maps.factors, self.allowed, self.params, rng)

    def _batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xs, labels, targets = [], [], []
        for slot in range(self.params.images_per_batch):
            _, maps, sample = self._sample(iteration, slot)
            if sample is None or len(sample.labels) == 0:
                continue
            fmap = maps.maps[sample.scale_index].to(self.device)
            xs.append(pool_sample(self.top, self.spp, fmap, maps.factors, sample))
            labels.append(torch.from_numpy(sample.labels))
            targets.append(torch.from_numpy(sample.targets))
        if not xs:
            empty = torch.zeros((0, self.spp.output_dim(self.top.channels)), device=self.device)
            return empty, torch.zeros(0, dtype=torch.int64), torch.zeros((0, 4))
        return (torch.cat(xs), torch.cat(labels).to(self.device), torch.cat(targets).to(self.device))

    @torch.no_grad()
    def measure_moments(self, progress: bool = False) -> None:
        """Per-dimension mean and std of pooled features under the initial conv top."""
        n = min(self.params.moment_images, len(self.images))
        rng = np.random.default_rng([self.params.seed, 17])
        picks = np.sort(rng.choice(len(self.images), size=n, replace=False))
        rows = []
        it = tqdm(picks, desc="input moments", unit="img", disable=not progress)
        for i in it:
            ti = self.images[int(i)]
            maps = self.cache.load_maps(ti.image_id)
            sample = sample_windows(ti, maps.factors, self.allowed, self.params,
                                    np.random.default_rng([self.params.seed, 19, int(i)]))
            if sample is None or len(sample.labels) == 0:
                continue
            fmap = maps.maps[sample.scale_index].to(self.device)
            rows.append(pool_sample(self.top, self.spp, fmap, maps.factors, sample).cpu().numpy())
        if not rows:
            raise DataError("conv fine-tuning: no foreground or background windows in the sampled images")
        mean, std = input_moments(np.concatenate(rows))
        self.mean = torch.from_numpy(mean).to(self.device)
        self.std = torch.from_numpy(std).to(self.device)

    # -- training ---------------------------------------------------------------------
    def _lr_factor(self, iteration: int) -> float:
        return 0.1 if iteration >= self.params.lr_step else 1.0

    def loss(self, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The multi-task loss of mini-batch ``iteration`` (class log loss + box smooth-L1)."""
        x, labels, targets = self._batch(iteration)
        if len(x) == 0:
            zero = sum(p.sum() * 0 for p in self.fc.parameters())
            return zero, {"cls": 0.0, "box": 0.0}
        logits, deltas = self.fc.forward_all((x - self.mean) / self.std)
        loss_cls = F.cross_entropy(logits, labels)
        fg = torch.nonzero(labels > 0).squeeze(1)
        if len(fg):
            pred = deltas[fg, labels[fg] - 1]
            loss_box = F.smooth_l1_loss(pred, targets[fg], beta=1.0, reduction="sum") / len(labels)
        else:
            loss_box = deltas.sum() * 0
        total = loss_cls + self.params.bbox_loss_weight * loss_box
        return total, {"cls": float(loss_cls.detach()), "box": float(loss_box.detach())}

    def train(self, checkpoint: str | Path | None = None, checkpoint_every: int = 250,
              stop_after: int | None = None, progress: bool = True) -> ConvFinetuneResult:
        """Run (or resume) training; returns the trained top and fc layers (eval mode, CPU,
        input standardisation folded into fc6). ``stop_after`` ends the run with a
        checkpoint after that many iterations in total, as an interruption would."""
        p = self.params
        ckpt = Path(checkpoint) if checkpoint is not None else None
        start, history = 0, []
        if ckpt is not None and ckpt.is_file():
            start, history = self._load_checkpoint(ckpt)
        if self.mean is None:
            self.measure_moments(progress)
        end = p.iterations if stop_after is None else min(p.iterations, stop_after)
        self.fc.train()
        t0 = time.perf_counter()
        bar = tqdm(range(start, end), desc="conv fine-tuning", unit="it", initial=start,
                   total=p.iterations, disable=not progress, mininterval=5.0)
        running: dict[str, float] = {}
        for t in bar:
            for g in self.opt.param_groups:
                g["lr"] = p.lr * g["lr_mult"] * self._lr_factor(t)
            loss, parts = self.loss(t)
            if not torch.isfinite(loss):
                raise DataError(f"conv fine-tuning diverged at iteration {t} (loss {float(loss)}); "
                                f"lower --lr or --top-lr-mult, or check the feature cache")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            for k, v in parts.items():
                running[k] = v if k not in running else 0.98 * running[k] + 0.02 * v
            if (t + 1) % 100 == 0:
                history.append({"iteration": t + 1, **{k: round(v, 4) for k, v in running.items()}})
                bar.set_postfix(cls=f"{running['cls']:.3f}", box=f"{running['box']:.3f}")
            if ckpt is not None and (t + 1) % checkpoint_every == 0 and t + 1 < end:
                self._save_checkpoint(ckpt, t + 1, history)
        seconds = time.perf_counter() - t0
        if ckpt is not None and end < p.iterations:
            self._save_checkpoint(ckpt, end, history)
        top, fc = self.top, self.fc
        fc.fold_input_standardisation(self.mean, self.std)
        top, fc = top.cpu().eval(), fc.cpu().eval()
        for q in list(top.parameters()) + list(fc.parameters()):
            q.requires_grad_(False)
        summary = {"iterations_run": end - start, "iterations": end, "seconds": round(seconds, 1),
                   "loss_every_100": history}
        return ConvFinetuneResult(top, fc, summary)

    # -- checkpoints (npz + JSON via safe_checkpoint: nothing in them can run code) ---
    def _run_identity(self) -> dict[str, Any]:
        return {"params": self.params.as_dict(), "num_images": len(self.images),
                "images": [ti.image_id for ti in _first(self.images, 3)],
                "top": self.top.config.as_dict()}

    def _modules(self) -> nn.Module:
        return nn.ModuleDict({"fc": self.fc, "top": self.top})

    def _save_checkpoint(self, path: Path, iteration: int, history: list) -> None:
        save_training_checkpoint(path, model=self._modules(), optimizer=self.opt,
                                 meta={**self._run_identity(), "iteration": iteration,
                                       "history": history, "mean": self.mean.cpu(),
                                       "std": self.std.cpu()})

    def _load_checkpoint(self, path: Path) -> tuple[int, list]:
        meta = load_training_checkpoint(path, self._modules(), self.opt, expect=self._run_identity())
        self.mean = torch.as_tensor(meta["mean"]).to(self.device)
        self.std = torch.as_tensor(meta["std"]).to(self.device)
        return int(meta["iteration"]), list(meta.get("history", []))


def mirrored(ti: TrainingImage, width: int) -> TrainingImage:
    """The training record of ``ti``'s image mirrored left-right (``width`` pixels)."""
    return replace(ti, proposals=mirror_boxes(ti.proposals, width),
                   gt_boxes=mirror_boxes(ti.gt_boxes, width))


def _first(images: Sequence[TrainingImage], n: int) -> list[TrainingImage]:
    return [images[i] for i in range(min(n, len(images)))]


class ConvTopSource:
    """``FeatureSource`` that pools windows on a conv top's output (for train-svm and pack
    on a conv fine-tuned model): cached map -> conv top -> SPP at the top's geometry."""

    def __init__(self, cache: FeatureCache, top: ConvTop, device: str | torch.device = "cpu",
                 levels: Sequence[int] = DEFAULT_LEVELS) -> None:
        self.cache, self.top, self.device = cache, top.to(device).eval(), torch.device(device)
        self.spp = SpatialPyramidPooling(levels)

    @property
    def dim(self) -> int:
        return self.spp.output_dim(self.top.channels)

    @torch.inference_mode()
    def pooled(self, image_id: str, boxes: np.ndarray) -> np.ndarray:
        from sppdet.features.extractor import pool_windows

        maps = self.top.apply_to_maps(self.cache.load_maps(image_id, self.device))
        return pool_windows(maps, boxes, self.top.stride, self.top.offset, self.spp).cpu().numpy()

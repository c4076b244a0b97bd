"""Head training from the caches: ``train_svm`` (what `sppdet train-svm` runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from sppdet.errors import ArgumentError
from sppdet.heads.kinds import DEFAULT_SVM_HEAD, SVM_HEADS, head_spec

# Where train_svm keeps its resumable checkpoints inside the output folder.
SVM_CHECKPOINT_DIR = ".train-svm-checkpoint"

Log = Callable[[str], Any]


def _quiet(message: str) -> None:
    """The default ``log``: say nothing."""


def train_svm(dataset: Any, features_dir: str | os.PathLike, proposals_dir: str | os.PathLike,
              out_dir: str | os.PathLike, *, head: str = DEFAULT_SVM_HEAD,
              finetuned_dir: str | os.PathLike | None = None, params: Any = None,
              device: str | None = None, progress: bool = True,
              checkpoint_every: int | None = None,
              log: Log = _quiet) -> Any:
    """Train one linear SVM per class (hard-negative mining) and box regressors from cached
    conv features, and write the model directory ``out_dir``.

    Args:
        dataset: a :class:`sppdet.data.VOCDataset` (its ids and annotations are used).
        features_dir: the conv-feature cache (`sppdet extract`).
        proposals_dir: the proposal cache the feature cache was extracted for.
        out_dir: the model directory to write (config.json, heads.npz; with head fc7 also
            the fc layers).
        head: "pool" (SVMs on scaled pooled features) or "fc7" (SVMs on the fc7 outputs of
            fc layers fine-tuned by `sppdet finetune`).
        finetuned_dir: with head fc7, the folder holding them (default: ``out_dir``).
        params: :class:`sppdet.heads.train.TrainParams` (default: its defaults).
        device: torch device for the fc layers (default: cuda when available).
        progress: show progress bars.
        checkpoint_every: save a resumable checkpoint every N images of the mining pass
            (default: ``heads.train.CHECKPOINT_EVERY``); an interrupted run resumes when
            called again with the same arguments.
        log: called with one-line status messages (e.g. ``print``; default: silent).

    Returns:
        The :class:`~sppdet.heads.model_dir.DetectorModel` written (``.path`` is ``out_dir``;
        ``.config["training"]`` holds the per-class training summary).

    Example:
        >>> model = sppdet.train_svm(VOCDataset(root, split="train"), "cache/feats",
        ...                          "cache/props", "models/pool")   # doctest: +SKIP
    """
    from sppdet.device import resolve_device
    from sppdet.atomic_dir import atomic_directory
    from sppdet.heads.model_dir import FC_FILE, copy_fc, load_fc, load_finetune_info, write_model
    from sppdet.heads.sources import DatasetImages, open_caches
    from sppdet.heads.train import CHECKPOINT_EVERY, TrainParams, train_heads

    out_dir = Path(out_dir)
    params = params if params is not None else TrainParams()
    checkpoint_every = checkpoint_every if checkpoint_every is not None else CHECKPOINT_EVERY
    if head not in SVM_HEADS:
        raise ArgumentError(f"head must be one of {', '.join(SVM_HEADS)}, got {head!r}")
    uses_fc = head_spec(head, "train_svm", ArgumentError).fc_layers
    if not uses_fc and finetuned_dir is not None:
        raise ArgumentError("finetuned_dir (--finetuned) only applies with head fc7")
    caches = open_caches(features_dir, proposals_dir)
    fc = feature_scale = finetune_info = conv_top = None
    source = caches.features
    src_dir = Path(finetuned_dir) if finetuned_dir is not None else out_dir
    if uses_fc:
        finetune_info = load_finetune_info(src_dir, dataset.classes, caches.features_manifest)
        fc = load_fc(src_dir / FC_FILE, str(resolve_device(device)))
        feature_scale = float(finetune_info["feature_scale"])
        if "conv_top" in finetune_info:  # a conv fine-tuned network: pool on its conv top
            from sppdet.features.conv_top import TOP_FILE, ConvTopConfig, load_conv_top
            from sppdet.features.spp import DEFAULT_LEVELS
            from sppdet.heads.conv_finetune import ConvTopSource

            conv_top = load_conv_top(src_dir / TOP_FILE, ConvTopConfig.from_dict(
                finetune_info["conv_top"], str(src_dir / "finetune.json")))
            source = ConvTopSource(caches.features, conv_top, str(resolve_device(device)),
                                   caches.features_manifest.get("levels", DEFAULT_LEVELS))
    images = DatasetImages(dataset, caches.proposals)
    log(f"{dataset.name}: {len(images)} images, {len(dataset.classes)} classes, head {head}")
    heads = train_heads(images, source, dataset.classes, params, fc=fc,
                        feature_scale=feature_scale, progress=progress,
                        checkpoint_dir=out_dir / SVM_CHECKPOINT_DIR, checkpoint_every=checkpoint_every,
                        fingerprint_extra={"features": caches.features_manifest,
                                           "conv_top": None if conv_top is None else
                                           _file_digest(src_dir / "conv_top.npz"),
                                           "proposals": caches.proposals_meta,
                                           "dataset": dataset.name},
                        keep_checkpoint=True)
    model = heads.to_model(dataset.classes, fc=None if fc is None else fc.cpu(),
                           features=caches.features_manifest, proposals=caches.proposals_meta,
                           finetune=finetune_info)
    model.config["dataset"] = {"name": dataset.name, "split": dataset.split, "images": len(images)}
    model.conv_top = conv_top
    # The folder changes all at once; the checkpoint goes with the old folder, afterwards.
    with atomic_directory(out_dir, exclude={SVM_CHECKPOINT_DIR}) as tmp:
        if fc is not None:
            copy_fc(src_dir, tmp)
        write_model(tmp, model)
    model.path = out_dir
    return model


def _file_digest(path: Path) -> str:
    """sha256 of a file (a conv top's weights in a checkpoint's fingerprint)."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# The resumable checkpoint finetune keeps in its output folder while it runs.
FINETUNE_CHECKPOINT = "finetune.ckpt.npz"


def finetune(dataset: Any, features_dir: str | os.PathLike, proposals_dir: str | os.PathLike,
             out_dir: str | os.PathLike, *, params: Any = None, target_norm: float | None = None,
             norm_images: int | None = None, norm_windows: int | None = None,
             device: str | None = None, progress: bool = True, checkpoint_every: int | None = None,
             log: Log = _quiet) -> dict[str, Any]:
    """Fine-tune fc6, fc7 and a (classes + 1)-way classifier on cached pooled features (what
    `sppdet finetune` runs without --conv-top), for SVMs on fc7 (``train_svm(head="fc7")``).

    Args:
        dataset: a :class:`sppdet.data.VOCDataset`.
        features_dir, proposals_dir: the conv-feature and proposal caches.
        out_dir: the model folder that receives fc.npz and finetune.json.
        params: :class:`sppdet.heads.finetune.FinetuneParams` (default: its defaults).
        target_norm, norm_images, norm_windows: the feature scaling (pooled features scaled
            to this mean L2 norm, estimated on this many images and windows per image;
            default: ``heads.scaling``'s).
        device: torch device (default: cuda when available).
        progress: show progress bars.
        checkpoint_every: iterations between resumable checkpoints (default:
            ``heads.finetune.CHECKPOINT_EVERY``); an interrupted run resumes when called again.
        log: called with one-line status messages (default: silent).

    Returns:
        The record written to finetune.json (feature scale, classes, feature settings,
        parameters, and ``summary``: iterations, seconds, training-pool accuracies).
    """
    from sppdet.device import resolve_device
    from sppdet.heads.finetune import CHECKPOINT_EVERY, FinetuneParams, build_window_pool, train_fc
    from sppdet.heads.model_dir import save_finetuned
    from sppdet.heads.scaling import NORM_IMAGES, NORM_WINDOWS, TARGET_NORM, estimate_scale
    from sppdet.heads.sources import DatasetImages, open_caches

    params = params if params is not None else FinetuneParams()
    target_norm = TARGET_NORM if target_norm is None else target_norm
    norm_images = NORM_IMAGES if norm_images is None else norm_images
    norm_windows = NORM_WINDOWS if norm_windows is None else norm_windows
    checkpoint_every = CHECKPOINT_EVERY if checkpoint_every is None else checkpoint_every
    if not 0 < params.fg_fraction < 1:
        raise ArgumentError(f"fg_fraction must be between 0 and 1, got {params.fg_fraction}")
    out_dir = Path(out_dir)
    caches = open_caches(features_dir, proposals_dir)
    images = DatasetImages(dataset, caches.proposals)
    log(f"{dataset.name}: {len(images)} images, {len(dataset.classes)} classes")
    scale, mean_norm = estimate_scale(images, caches.features, target_norm=target_norm,
                                      num_images=norm_images, windows_per_image=norm_windows,
                                      seed=params.seed)
    pool = build_window_pool(images, caches.features, scale, params, progress=progress)
    log(f"window pool: {len(pool.labels)} windows ({pool.num_fg} foreground), "
        f"{pool.x.nbytes / 2**20:.0f} MiB")
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / FINETUNE_CHECKPOINT
    fc, summary = train_fc(pool, len(dataset.classes), params, device=str(resolve_device(device)),
                           checkpoint=ckpt, checkpoint_every=checkpoint_every, progress=progress)
    info = {"classes": list(dataset.classes), "feature_scale": scale, "mean_norm": mean_norm,
            "target_norm": target_norm, "features": caches.features_manifest,
            "proposals": caches.proposals_meta, "params": params.as_dict(), "summary": summary,
            "dataset": {"name": dataset.name, "split": dataset.split, "images": len(images)}}
    dropped = save_finetuned(out_dir, fc, info, exclude={FINETUNE_CHECKPOINT})  # checkpoint goes last
    if dropped:
        log(f"removed the model that was in {out_dir} ({', '.join(dropped)}): it used the previous "
            f"fc layers; train its SVMs again with train-svm --head fc7")
    return info

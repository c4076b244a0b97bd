"""``sppdet finetune``: train fc6, fc7 and a (classes + 1)-way classifier on cached pooled
features, for SVMs on fc7 (``sppdet train-svm --head fc7``)."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.cli.options import cache_options, dataset_options, default_of, device_option
from sppdet.data import VOCDataset
from sppdet.heads.conv_finetune import ConvFinetuneParams as CF
from sppdet.heads.finetune import CHECKPOINT_EVERY, FinetuneParams as F
from sppdet.heads.scaling import NORM_IMAGES, NORM_WINDOWS, TARGET_NORM


@click.command("finetune")
@dataset_options
@cache_options
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Model folder: fc.npz and finetune.json are written here.")
@click.option("--conv-top", "conv_top_end", type=int, default=None,
              help="Also fine-tune the backbone's conv layers above the cached one, up to (not "
                   "including) this stage index, through SPP (e.g. 18 for MobileNetV2 blocks "
                   "14-17, 320 channels at stride 32). Writes a complete model (softmax "
                   "classifier + box regression); `train-svm --head fc7` can add SVMs.")
@click.option("--top-reduce", type=click.IntRange(min=1), default=None,
              help="With --conv-top: add a new 1x1 convolution to this many channels after those "
                   "layers (pooled features and fc6 shrink in proportion).")
@click.option("--freeze-top", is_flag=True,
              help="With --conv-top: keep those conv layers at their ImageNet weights (the deeper "
                   "layer's features without conv fine-tuning).")
@click.option("--top-lr-mult", default=default_of(CF, "top_lr_mult"), show_default=True,
              help="With --conv-top: the conv layers' learning rate is --lr times this.")
@click.option("--images-per-batch", default=default_of(CF, "images_per_batch"), show_default=True,
              help="With --conv-top: images per mini-batch (Fast R-CNN: 2).")
@click.option("--rois-per-image", default=default_of(CF, "rois_per_image"), show_default=True,
              help="With --conv-top: windows per image in a mini-batch (Fast R-CNN: 64).")
@click.option("--train-scales", type=int, multiple=True,
              help="With --conv-top: train on these cached scales only (default: all).")
@click.option("--flip", is_flag=True,
              help="With --conv-top: use each image mirrored left-right half of the time "
                   "(needs the mirrored maps: `sppdet extract --flip`).")
@click.option("--hidden", default=default_of(F, "hidden"), show_default=True,
              help="Width of fc6 and fc7 (paper: 4096).")
@click.option("--dropout", default=default_of(F, "dropout"), show_default=True)
@click.option("--iterations", type=int, default=None,
              help=f"Mini-batches in total (default {default_of(F, 'iterations')}; "
                   f"{default_of(CF, 'iterations')} with --conv-top).")
@click.option("--lr", default=default_of(F, "lr"), show_default=True,
              help="Initial learning rate (SGD).")
@click.option("--lr-step", type=int, default=None,
              help="Iteration where the rate drops 10x (default: 3/4 of --iterations).")
@click.option("--momentum", default=default_of(F, "momentum"), show_default=True)
@click.option("--weight-decay", default=default_of(F, "weight_decay"), show_default=True)
@click.option("--standardise/--no-standardise", default=default_of(F, "standardise"), show_default=True,
              help="Train on per-dimension standardised inputs (folded into fc6 afterwards).")
@click.option("--init-std", type=float, default=default_of(F, "init_std"),
              help="Gaussian init of the new layers with this std (default: PyTorch's init).")
@click.option("--batch-size", default=default_of(F, "batch_size"), show_default=True)
@click.option("--fg-fraction", default=default_of(F, "fg_fraction"), show_default=True,
              help="Foreground share of a mini-batch.")
@click.option("--fg-iou", default=default_of(F, "fg_iou"), show_default=True,
              help="Foreground: IoU >= this with a box.")
@click.option("--bg-iou-low", default=default_of(F, "bg_iou_low"), show_default=True,
              help="Background: IoU in [this, --fg-iou).")
@click.option("--fg-per-image", default=default_of(F, "fg_per_image"), show_default=True,
              help="Foreground windows pooled per image into the training pool.")
@click.option("--bg-per-image", default=default_of(F, "bg_per_image"), show_default=True,
              help="Background windows pooled per image into the training pool.")
@click.option("--target-norm", default=TARGET_NORM, show_default=True,
              help="Pooled features are scaled to this mean L2 norm.")
@click.option("--norm-images", default=NORM_IMAGES, show_default=True)
@click.option("--norm-windows", default=NORM_WINDOWS, show_default=True)
@click.option("--checkpoint-every", default=CHECKPOINT_EVERY, show_default=True,
              help="Save a resumable checkpoint every N iterations.")
@click.option("--seed", default=default_of(F, "seed"), show_default=True)
@device_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def finetune(dataset: VOCDataset, features_dir: Path, proposals_dir: Path, out_dir: Path,
             conv_top_end: int | None, top_reduce: int | None, freeze_top: bool, top_lr_mult: float, images_per_batch: int,
             rois_per_image: int, train_scales: tuple[int, ...], flip: bool,
             hidden: int, dropout: float, iterations: int | None, lr: float, lr_step: int | None, momentum: float,
             weight_decay: float, standardise: bool, init_std: float | None, batch_size: int, fg_fraction: float, fg_iou: float,
             bg_iou_low: float, fg_per_image: int, bg_per_image: int, target_norm: float,
             norm_images: int, norm_windows: int, checkpoint_every: int, seed: int,
             device: str | None, quiet: bool) -> None:
    """Fine-tune fc layers on cached pooled features (25% foreground windows, IoU >= 0.5;
    background IoU in [0.1, 0.5)). An interrupted run resumes from its checkpoint."""
    from sppdet.distributed import refuse_sharded

    refuse_sharded("finetune")

    from sppdet.device import resolve_device
    from sppdet.perf import tune_allocator
    from sppdet.pipeline.training import finetune as run_finetune

    tune_allocator()

    if not 0 < fg_fraction < 1:
        raise click.BadParameter("must be between 0 and 1", param_hint="--fg-fraction")
    if conv_top_end is not None:
        from sppdet.heads.conv_finetune import ConvFinetuneParams
        from sppdet.heads.conv_model import train_conv_model

        iterations = iterations or default_of(ConvFinetuneParams, "iterations")
        params = ConvFinetuneParams(
            train_top=not freeze_top, hidden=hidden, dropout=dropout, fg_iou=fg_iou,
            bg_iou_low=bg_iou_low, images_per_batch=images_per_batch, rois_per_image=rois_per_image,
            fg_fraction=fg_fraction, iterations=iterations, lr=lr, top_lr_mult=top_lr_mult,
            lr_step=lr_step or iterations * 3 // 4, momentum=momentum, weight_decay=weight_decay,
            scales=tuple(train_scales) or None, flip=flip, seed=seed)
        path = train_conv_model(dataset, features_dir, proposals_dir, out_dir, conv_top_end, params,
                                reduce=top_reduce, device=str(resolve_device(device)), checkpoint_every=checkpoint_every,
                                progress=not quiet, echo=click.echo)
        click.echo(f"wrote {path}; evaluate: sppdet eval --model {path} ...; optional SVMs on its "
                   f"fc7: sppdet train-svm --head fc7 --finetuned {path} --out DIR ...")
        return
    if freeze_top or train_scales or top_reduce or flip:
        raise click.UsageError("--freeze-top, --top-reduce, --train-scales and --flip apply with --conv-top")
    iterations = iterations or default_of(F, "iterations")
    lr_step = lr_step or iterations * 3 // 4  # as --help says (3,000 at the default 4,000)
    params = F(hidden=hidden, dropout=dropout, fg_iou=fg_iou, bg_iou_low=bg_iou_low,
               fg_fraction=fg_fraction, batch_size=batch_size, fg_per_image=fg_per_image,
               bg_per_image=bg_per_image, iterations=iterations, lr=lr, lr_step=lr_step,
               momentum=momentum, weight_decay=weight_decay, standardise=standardise,
               init_std=init_std, seed=seed)
    summary = run_finetune(dataset, features_dir, proposals_dir, out_dir, params=params,
                           target_norm=target_norm, norm_images=norm_images,
                           norm_windows=norm_windows, device=device, progress=not quiet,
                           checkpoint_every=checkpoint_every, log=click.echo)["summary"]
    click.echo(f"{summary['iterations']} iterations in {summary['seconds']:.0f} s; training-pool "
               f"accuracy: foreground {summary['pool_fg_accuracy']}, background "
               f"{summary['pool_bg_accuracy']}")
    click.echo(f"wrote {out_dir / 'fc.npz'}; next: sppdet train-svm --head fc7 --out {out_dir} ...")

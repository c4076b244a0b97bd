"""``sppdet train-svm``: per-class SVMs with hard-negative mining, and box regression,
trained from the conv-feature cache (``sppdet.pipeline.training.train_svm``)."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.cli.options import cache_options, dataset_options, default_of, device_option
from sppdet.data import VOCDataset
from sppdet.heads.bbox_regression import BoxRegParams
from sppdet.heads.kinds import DEFAULT_SVM_HEAD, HEADS, SVM_HEADS
from sppdet.heads.mining import MiningParams
from sppdet.heads.svm import SVMParams
from sppdet.heads.train import CHECKPOINT_EVERY, TrainParams

S, M, B, T = SVMParams, MiningParams, BoxRegParams, TrainParams


@click.command("train-svm")
@dataset_options
@cache_options
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Model folder to write (config.json, heads.npz).")
@click.option("--head", type=click.Choice(SVM_HEADS), default=DEFAULT_SVM_HEAD, show_default=True,
              help="SVMs on scaled pooled features, or on fc7 of the fine-tuned fc layers.")
@click.option("--finetuned", "finetuned_dir", type=click.Path(path_type=Path), default=None,
              help="With --head fc7: folder holding fc.npz from `sppdet finetune` (default: --out).")
@click.option("--svm-c", default=default_of(S, "C"), show_default=True, help="liblinear C.")
@click.option("--pos-weight", default=default_of(S, "pos_weight"), show_default=True,
              help="Weight of positive examples.")
@click.option("--bias-mult", default=default_of(S, "bias_mult"), show_default=True,
              help="Value of the bias feature.")
@click.option("--svm-tol", default=default_of(S, "tol"), show_default=True,
              help="liblinear stopping tolerance (liblinear's default for the dual hinge solver).")
@click.option("--svm-max-iter", default=default_of(S, "max_iter"), show_default=True)
@click.option("--neg-iou", default=default_of(M, "neg_iou"), show_default=True,
              help="Negatives: IoU below this with every ground-truth box of the class.")
@click.option("--hard-thresh", default=default_of(M, "hard_thresh"), show_default=True,
              help="Mining adds negatives scoring above this.")
@click.option("--evict-thresh", default=default_of(M, "evict_thresh"), show_default=True,
              help="After retraining, cached negatives scoring below this are evicted.")
@click.option("--retrain-every", default=default_of(M, "retrain_every"), show_default=True,
              help="Retrain a class after this many new negatives.")
@click.option("--max-negatives", default=default_of(M, "max_negatives") or 0, show_default=True,
              help="Cap on a class's cached negatives after eviction, hardest kept (0: no cap).")
@click.option("--collapse-share", default=default_of(M, "collapse_share"), show_default=True,
              help="Refit a class's SVM with 10x its C when fewer than this share of its training "
                   "positives score above 0 (e.g. 0.25); 0: off (the reference; see docs/heads.md).")
@click.option("--max-c-boosts", default=default_of(M, "max_c_boosts"), show_default=True,
              help="At most this many 10x raises of C per class.")
@click.option("--gt-negatives/--no-gt-negatives", default=default_of(M, "gt_negatives"),
              show_default=True,
              help="Other classes' ground-truth boxes are negative candidates too (R-CNN).")
@click.option("--use-difficult/--no-use-difficult", default=default_of(T, "use_difficult"),
              show_default=True, help="Difficult objects are positives too (R-CNN, SPP-net code).")
@click.option("--max-positives", default=default_of(T, "max_positives") or 0, show_default=True,
              help="Seeded sample of at most N positives per class (0: all).")
@click.option("--target-norm", default=default_of(T, "target_norm"), show_default=True,
              help="Features are scaled to this mean L2 norm.")
@click.option("--norm-images", default=default_of(T, "norm_images"), show_default=True,
              help="Images sampled to estimate the mean feature norm.")
@click.option("--norm-windows", default=default_of(T, "norm_windows"), show_default=True,
              help="Windows sampled per image for it.")
@click.option("--bbox-reg/--no-bbox-reg", default=default_of(T, "bbox") is not None,
              show_default=True, help="Also train class-specific box regression.")
@click.option("--bbox-lambda", default=default_of(B, "lam"), show_default=True,
              help="Ridge lambda (SPP-net's code: 4000; R-CNN: 1000).")
@click.option("--bbox-min-iou", default=default_of(B, "min_iou"), show_default=True,
              help="Box regression windows: IoU with a ground-truth box at least this.")
@click.option("--bbox-max-per-class", default=default_of(B, "max_per_class") or 0, show_default=True,
              help="Seeded sample of at most N box regression windows per class (0: all).")
@click.option("--checkpoint-every", default=CHECKPOINT_EVERY, show_default=True,
              help="Save a resumable checkpoint every N images of the mining pass.")
@click.option("--seed", default=default_of(T, "seed"), show_default=True)
@device_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_svm(dataset: VOCDataset, features_dir: Path, proposals_dir: Path, out_dir: Path,
              head: str, finetuned_dir: Path | None, svm_c: float, pos_weight: float, bias_mult: float,
              svm_tol: float, svm_max_iter: int, neg_iou: float, hard_thresh: float,
              evict_thresh: float, retrain_every: int, max_negatives: int, collapse_share: float,
              max_c_boosts: int, gt_negatives: bool,
              use_difficult: bool, max_positives: int, target_norm: float, norm_images: int,
              norm_windows: int, bbox_reg: bool, bbox_lambda: float, bbox_min_iou: float,
              bbox_max_per_class: int, checkpoint_every: int, seed: int, device: str | None, quiet: bool) -> None:
    """Train one linear SVM per class (liblinear, hard-negative mining, one pass) and box
    regressors from cached conv features; write the model folder.

    An interrupted run resumes when the same command is run again (checkpoints in
    OUT/.train-svm-checkpoint, removed at the end)."""
    from sppdet.distributed import refuse_sharded

    refuse_sharded("train-svm")

    from sppdet.heads.train import summary_table
    from sppdet.perf import tune_allocator
    from sppdet.pipeline.training import train_svm as run

    tune_allocator()

    if not HEADS[head].fc_layers and finetuned_dir is not None:
        raise click.UsageError("--finetuned only applies with --head fc7")
    params = TrainParams(
        svm=SVMParams(C=svm_c, pos_weight=pos_weight, bias_mult=bias_mult, tol=svm_tol,
                      max_iter=svm_max_iter, seed=seed),
        mining=MiningParams(neg_iou=neg_iou, hard_thresh=hard_thresh, evict_thresh=evict_thresh,
                            retrain_every=retrain_every, max_negatives=max_negatives or None,
                            collapse_share=collapse_share, max_c_boosts=max_c_boosts,
                            gt_negatives=gt_negatives),
        bbox=BoxRegParams(lam=bbox_lambda, min_iou=bbox_min_iou,
                          max_per_class=bbox_max_per_class or None) if bbox_reg else None,
        use_difficult=use_difficult, max_positives=max_positives or None, target_norm=target_norm,
        norm_images=norm_images, norm_windows=norm_windows, seed=seed)
    model = run(dataset, features_dir, proposals_dir, out_dir, head=head, finetuned_dir=finetuned_dir,
                params=params, device=device, progress=not quiet, checkpoint_every=checkpoint_every,
                log=click.echo)
    click.echo(summary_table(model.config["training"]))
    click.echo(f"wrote {out_dir}")

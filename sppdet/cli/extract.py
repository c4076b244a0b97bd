"""``sppdet extract``: conv maps of every image and scale into the feature cache."""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from sppdet.cli.options import dataset_options, device_option
from sppdet.data import VOCDataset
from sppdet.features.backbones import BACKBONES, DEFAULT_BACKBONE
from sppdet.distributed import sharded_run
from sppdet.features.pyramid import DEFAULT_MAX_SIZE, DEFAULT_SCALES
from sppdet.perf import tune_allocator


def parse_scales(values: tuple[str, ...]) -> tuple[int, ...]:
    """``--scales 688`` or ``--scales 480,576`` or ``--scales "480 576"`` (repeatable)."""
    if not values:
        return DEFAULT_SCALES
    scales: list[int] = []
    for value in values:
        for part in value.replace(",", " ").split():
            if not part.isdigit() or int(part) < 32:
                raise click.BadParameter(f"{part!r} is not a scale in pixels (an integer >= 32)",
                                         param_hint="--scales")
            scales.append(int(part))
    if len(set(scales)) != len(scales):
        raise click.BadParameter(f"repeated scale in {scales}", param_hint="--scales")
    return tuple(scales)


@click.command("extract")
@dataset_options
@click.option("--proposals", "proposals_dir", required=True, type=click.Path(path_type=Path),
              help="Proposal cache folder (meta.json + <id>.npz).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Feature cache folder (created; an existing one is resumed).")
@click.option("--backbone", type=click.Choice(list(BACKBONES)), default=DEFAULT_BACKBONE,
              show_default=True, help="Conv trunk to pool from.")
@click.option("--weights", default=None,
              help="torchvision weights name (e.g. IMAGENET1K_V1), 'random', or a .pth file "
                   "(default: the backbone's ImageNet weights; random for zf5).")
@click.option("--scales", "scales", multiple=True,
              help="Shorter-side sizes, e.g. '688' (single scale) or "
                   f"'{','.join(map(str, DEFAULT_SCALES))}' (the default).")
@click.option("--max-size", type=click.IntRange(min=32), default=DEFAULT_MAX_SIZE, show_default=True,
              help="Cap on the longer side of a resized image.")
@click.option("--flip", is_flag=True,
              help="Also cache the maps of each image mirrored left-right, for training on "
                   "flipped copies (`finetune --conv-top ... --flip`); twice the time and disk.")
@device_option
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: torch's choice).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def extract(dataset: VOCDataset, proposals_dir: Path, out_dir: Path, backbone: str,
            weights: str | None, scales: tuple[str, ...], max_size: int, flip: bool, device: str | None,
            threads: int | None, as_json: bool) -> None:
    """Run the conv layers once per image and scale; store the maps (float16, one file per
    image) for pooling any window later. Interrupted runs resume where they stopped.
    Under torchrun, each rank does its share of the images (docs/large_datasets.md)."""
    from sppdet.pipeline.extraction import extract_features

    scale_list = parse_scales(scales)
    tune_allocator()
    if threads:
        torch.set_num_threads(threads)
    with sharded_run(device) as ranks:
        summary = extract_features(dataset, proposals_dir, out_dir, backbone=backbone, weights=weights,
                                   scales=scale_list, max_size=max_size, device=device, flip=flip,
                                   progress=not as_json, ranks=ranks)
    if summary is None:
        return  # not rank 0: rank 0 reports for all
    cached, on_disk = summary.pop("cached_images"), summary["bytes_on_disk"]
    for line in summary["damaged"][:20]:
        click.echo(f"damaged cache file, recomputed: {line}", err=True)
    if len(summary["damaged"]) > 20:
        click.echo(f"... and {len(summary['damaged']) - 20} more damaged cache files", err=True)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    todo = summary["extracted"]
    rate = f", {summary['seconds_per_image']:.3f} s/image" if todo else ""
    if summary["ranks"] > 1 and todo:
        rate += f" per rank, {summary['ranks']} ranks, {summary['wall_seconds']:.1f} s wall"
    mirrored = " (and their mirrored copies)" if flip else ""
    click.echo(f"{todo} images extracted{mirrored}, {summary['already_cached']} already cached{rate} "
               f"({summary['device']}, {backbone}, scales {', '.join(map(str, scale_list))}).")
    click.echo(f"{out_dir}: {cached} images, {on_disk / 1e6:.1f} MB on disk "
               f"({summary['bytes_per_image'] / 1e6:.2f} MB per image); "
               f"feature dimension {summary['feature_dim']}.")

"""``sppdet extract``: conv maps of every image and scale into the feature cache."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch
from tqdm import tqdm

from sppdet.cli.options import dataset_options, device_option
from sppdet.data import VOCDataset
from sppdet.errors import SppdetError
from sppdet.features.backbones import BACKBONES, DEFAULT_BACKBONE, get_backbone
from sppdet.features.cache import FeatureCache
from sppdet.features.extractor import FeatureExtractor
from sppdet.features.proposal_files import proposal_path, read_proposal_meta
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
@device_option
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: torch's choice).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def extract(dataset: VOCDataset, proposals_dir: Path, out_dir: Path, backbone: str,
            weights: str | None, scales: tuple[str, ...], max_size: int, device: str | None,
            threads: int | None, as_json: bool) -> None:
    """Run the conv layers once per image and scale; store the maps (float16, one file per
    image) for pooling any window later. Interrupted runs resume where they stopped."""
    scale_list = parse_scales(scales)
    tune_allocator()
    if threads:
        torch.set_num_threads(threads)
    meta = read_proposal_meta(proposals_dir)
    ids = list(dataset.ids)
    missing = [i for i in ids if not proposal_path(proposals_dir, i).is_file()]
    if missing:
        raise SppdetError(f"{proposals_dir}: no proposals for {len(missing)} of {len(ids)} images "
                          f"(first: {', '.join(missing[:3])}); run the proposals command on the same images")

    extractor = FeatureExtractor(get_backbone(backbone, weights), scale_list, max_size, device)
    config = {**extractor.config(),
              "proposals": {"method": meta["method"], "params": meta.get("params", {})}}
    cache = FeatureCache.create(out_dir, config, levels=extractor.spp.levels)

    todo = [i for i in ids if not cache.has(i)]
    start = time.perf_counter()
    for image_id in tqdm(todo, desc="extract", unit="img", disable=as_json or not todo):
        cache.save(image_id, extractor.conv_maps(dataset.load_image(image_id)))
    seconds = time.perf_counter() - start

    on_disk = cache.bytes_on_disk()
    cached = len(cache.image_ids())
    summary = {"cache": str(out_dir), "backbone": backbone, "weights": extractor.backbone.weights,
               "scales": list(scale_list), "device": str(extractor.device), "images": len(ids),
               "extracted": len(todo), "already_cached": len(ids) - len(todo),
               "seconds_per_image": round(seconds / len(todo), 4) if todo else None,
               "bytes_on_disk": on_disk, "bytes_per_image": round(on_disk / cached) if cached else 0,
               "feature_dim": extractor.dim}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    rate = f", {summary['seconds_per_image']:.3f} s/image" if todo else ""
    click.echo(f"{len(todo)} images extracted, {summary['already_cached']} already cached{rate} "
               f"({summary['device']}, {backbone}, scales {', '.join(map(str, scale_list))}).")
    click.echo(f"{out_dir}: {cached} images, {on_disk / 1e6:.1f} MB on disk "
               f"({summary['bytes_per_image'] / 1e6:.2f} MB per image); "
               f"feature dimension {extractor.dim}.")

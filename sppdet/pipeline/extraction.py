"""Conv maps of a data set into the feature cache: ``extract_features`` (what `sppdet
extract` runs)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sppdet.distributed import Ranks, all_gather_json, broadcast_json, main_first, rank_device
from sppdet.errors import SppdetError
from sppdet.features.backbones import DEFAULT_BACKBONE
from sppdet.features.pyramid import DEFAULT_MAX_SIZE, DEFAULT_SCALES


def extract_features(dataset: Any, proposals_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                     backbone: str = DEFAULT_BACKBONE, weights: str | None = None,
                     scales: Sequence[int] = DEFAULT_SCALES, max_size: int = DEFAULT_MAX_SIZE,
                     device: str | None = None, flip: bool = False, progress: bool = True,
                     ranks: Ranks | None = None) -> dict[str, Any] | None:
    """Run the conv layers once per image and scale and store the maps (float16, one file
    per image) in the feature cache ``out_dir``; images already there are skipped, so an
    interrupted run resumes (a damaged file is recomputed and listed in ``damaged``). A
    cache made with other settings is refused.

    Args:
        dataset: a :class:`sppdet.data.VOCDataset` (or COCO data set).
        proposals_dir: the proposal cache of the same images (`sppdet proposals`).
        out_dir: the feature cache folder (created if absent).
        backbone: a registered backbone (``features.backbones.BACKBONES``).
        weights: torchvision weights name, "random", or a .pth file (default: the
            backbone's ImageNet weights).
        scales: shorter-side sizes of the image pyramid.
        max_size: cap on the longer side of a resized image.
        device: torch device (default: cuda when available).
        flip: also store the maps of each image mirrored left-right (``flipped/``), the
            training augmentation of ``finetune --flip``; twice the time and disk.
        progress: show a progress bar.
        ranks: in a sharded run (:mod:`sppdet.distributed`), rank 0 opens the cache and
            lists the images left, each rank extracts its share of them, and rank 0 gets
            the summary (the other ranks None). ``device`` "cuda" means cuda:LOCAL_RANK.

    Returns:
        A summary: images, extracted, already_cached, damaged, seconds_per_image, bytes_on_disk,
        bytes_per_image, feature_dim, device, backbone, weights, scales, cache, ranks,
        wall_seconds (of the extraction loop, the slowest rank's).
    """
    from tqdm import tqdm

    from sppdet.features.backbones import get_backbone
    from sppdet.features.cache import FeatureCache
    from sppdet.features.extractor import FeatureExtractor
    from sppdet.features.proposal_files import ProposalFiles

    proposals = ProposalFiles(proposals_dir)
    meta = proposals.meta
    ids = list(dataset.ids)
    missing = [i for i in ids if not proposals.has(i)]
    if missing:
        raise SppdetError(f"{proposals_dir}: no proposals for {len(missing)} of {len(ids)} images "
                          f"(first: {', '.join(missing[:3])}); run the proposals command on the same images")
    ranks = ranks or Ranks()
    extractor = FeatureExtractor(get_backbone(backbone, weights), scales, max_size,
                                 rank_device(device, ranks))
    config = {**extractor.config(),
              "proposals": {"method": meta["method"], "params": meta.get("params", {})}}

    def open_cache() -> dict[str, list[str]]:
        cache = FeatureCache.create(out_dir, config, levels=extractor.spp.levels)
        todo, damaged = [], []  # todo: [image id, [which maps: False plain, True mirrored]]
        for image_id in ids:
            missing = []
            for flipped in (False, True) if flip else (False,):
                problem = cache.problem(image_id, flipped) if cache.has(image_id, flipped) else ""
                if problem is None:
                    continue  # complete
                if problem:  # e.g. cut short by a full disk: recomputed
                    damaged.append(f"{cache.path(image_id, flipped)}: {problem}")
                missing.append(flipped)
            if missing:
                todo.append([image_id, missing])
        return {"todo": todo, "damaged": damaged}

    # Rank 0 opens (or creates) the cache and lists what is left; each rank does a share.
    left = broadcast_json(ranks, main_first(ranks, open_cache))
    todo, damaged = left["todo"], left["damaged"]
    cache = FeatureCache(out_dir)
    cache.check(config)
    mine = ranks.share(todo)
    desc = "extract" if not ranks.sharded else f"extract ({ranks.describe()})"
    start = time.perf_counter()
    for image_id, which in tqdm(mine, desc=desc, unit="img",
                                disable=not progress or not mine or not ranks.is_main):
        image = dataset.load_image(image_id)  # decoded once for its plain and mirrored maps
        for flipped in which:
            view = np.ascontiguousarray(image[:, ::-1]) if flipped else image
            cache.save(image_id, extractor.conv_maps(view), flipped)
    seconds = time.perf_counter() - start
    timings = all_gather_json(ranks, seconds)
    if not ranks.is_main:
        return None  # rank 0 reports for all

    on_disk = cache.bytes_on_disk()
    cached = len(cache.image_ids())
    return {"cache": str(Path(out_dir)), "backbone": backbone, "weights": extractor.backbone.weights,
            "scales": list(extractor.scales), "device": str(extractor.device), "images": len(ids),
            "extracted": len(todo), "already_cached": len(ids) - len(todo), "damaged": damaged,
            "flipped": flip, "maps_written": sum(len(which) for _, which in todo),
            "seconds_per_image": round(sum(timings) / len(todo), 4) if todo else None,
            "ranks": ranks.world_size, "wall_seconds": round(max(timings), 3),
            "bytes_on_disk": on_disk, "bytes_per_image": round(on_disk / cached) if cached else 0,
            "cached_images": cached, "feature_dim": extractor.dim}

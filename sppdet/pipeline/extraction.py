"""Conv maps of a data set into the feature cache: ``extract_features`` (what `sppdet
extract` runs)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

from sppdet.errors import SppdetError
from sppdet.features.backbones import DEFAULT_BACKBONE
from sppdet.features.pyramid import DEFAULT_MAX_SIZE, DEFAULT_SCALES


def extract_features(dataset: Any, proposals_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                     backbone: str = DEFAULT_BACKBONE, weights: str | None = None,
                     scales: Sequence[int] = DEFAULT_SCALES, max_size: int = DEFAULT_MAX_SIZE,
                     device: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the conv layers once per image and scale and store the maps (float16, one file
    per image) in the feature cache ``out_dir``; images already there are skipped, so an
    interrupted run resumes. A cache made with other settings is refused.

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
        progress: show a progress bar.

    Returns:
        A summary: images, extracted, already_cached, seconds_per_image, bytes_on_disk,
        bytes_per_image, feature_dim, device, backbone, weights, scales, cache.
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
    extractor = FeatureExtractor(get_backbone(backbone, weights), scales, max_size, device)
    config = {**extractor.config(),
              "proposals": {"method": meta["method"], "params": meta.get("params", {})}}
    cache = FeatureCache.create(out_dir, config, levels=extractor.spp.levels)

    todo = [i for i in ids if not cache.has(i)]
    start = time.perf_counter()
    for image_id in tqdm(todo, desc="extract", unit="img", disable=not progress or not todo):
        cache.save(image_id, extractor.conv_maps(dataset.load_image(image_id)))
    seconds = time.perf_counter() - start

    on_disk = cache.bytes_on_disk()
    cached = len(cache.image_ids())
    return {"cache": str(Path(out_dir)), "backbone": backbone, "weights": extractor.backbone.weights,
            "scales": list(extractor.scales), "device": str(extractor.device), "images": len(ids),
            "extracted": len(todo), "already_cached": len(ids) - len(todo),
            "seconds_per_image": round(seconds / len(todo), 4) if todo else None,
            "bytes_on_disk": on_disk, "bytes_per_image": round(on_disk / cached) if cached else 0,
            "cached_images": cached, "feature_dim": extractor.dim}

"""Region proposals of a data set into the proposal cache: ``compute_proposals`` (what
`sppdet proposals` runs)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from proposals import DEFAULT_METHOD, CommonOptions
from sppdet.distributed import Ranks, all_gather_json, broadcast_json, main_first
from sppdet.errors import ArgumentError, ConfigMismatchError, DataError

# The summary of the last run, written into the cache folder.
LAST_RUN_FILE = "last_run.json"

_COMMON = CommonOptions()


def compute_proposals(dataset: Any, out_dir: str | os.PathLike, *, method: str = DEFAULT_METHOD,
                      max_boxes: int = _COMMON.max_boxes, min_side: float = _COMMON.min_side,
                      dedupe: bool = _COMMON.dedupe, max_side: int = _COMMON.max_side,
                      edge_model: str | os.PathLike | None = None, workers: int | None = None,
                      progress: bool = True, ranks: Ranks | None = None) -> dict[str, Any] | None:
    """Compute the proposals of every image of ``dataset`` into the proposal cache
    ``out_dir`` (meta.json plus one ``<image_id>.npz`` of boxes per image).

    Images already cached are skipped, so an interrupted run resumes; a damaged file is
    recomputed. The cache records the method and its parameters: a cache made with other
    settings is refused. An image that cannot be read is listed in ``failures`` and the
    others go on (calling again with the same arguments retries only those). The summary
    is also written to ``out_dir/last_run.json``.

    Args:
        dataset: a :class:`sppdet.data.VOCDataset` (or COCO data set): its ids, image paths
            and annotated sizes.
        out_dir: the proposal cache folder (created if absent).
        method: a registered method (``proposals.available_methods()``: ss-fast, ss-quality,
            edgeboxes).
        max_boxes: keep at most this many boxes per image, best first.
        min_side: drop boxes narrower or shorter than this (original pixels).
        dedupe: drop boxes equal to an earlier one after rounding to whole pixels.
        max_side: down-scale images whose longer side exceeds this before proposing (boxes
            are scaled back); 0 never down-scales.
        edge_model: edgeboxes only: OpenCV's structured edge model (model.yml.gz); default
            ``$SPPDET_EDGE_MODEL``, else a Sobel-Canny fallback edge map.
        workers: worker processes (default: the number of CPU cores).
        progress: show a progress bar.
        ranks: in a sharded run (:mod:`sppdet.distributed`), rank 0 opens the cache and
            lists the images left, each rank proposes its share, and rank 0 gets the summary
            (the other ranks None).

    Returns:
        The summary (what ``last_run.json`` holds): dataset, method, params (the method's
        recorded parameters), total, done, skipped, failed (a count), failures and damaged
        (lists of ``{"image_id", "reason"}``), median_seconds_per_image,
        mean_boxes_per_image, wall_seconds.

    Raises:
        ArgumentError: an unknown method, ``edge_model`` with another method than
            edgeboxes, or an option out of range.
        ConfigMismatchError: ``out_dir`` holds proposals made with other settings.
        DataError: ``out_dir`` cannot be written, or the ids repeat.

    Example:
        >>> from sppdet.data import VOCDataset
        >>> summary = sppdet.compute_proposals(VOCDataset("VOC2007", split="train"),
        ...                                    "cache/props", method="edgeboxes")  # doctest: +SKIP
        >>> summary["done"], summary["failures"]                                  # doctest: +SKIP
    """
    from proposals import CacheMismatchError, ProposalError, available_methods, create_method, run_proposals
    from sppdet.fileio import save_json

    out_dir = Path(out_dir)
    if method not in available_methods():
        raise ArgumentError(f"unknown proposal method {method!r}; choose one of {', '.join(available_methods())}")
    if edge_model is not None and method != "edgeboxes":
        raise ArgumentError("edge_model (--edge-model) applies to method edgeboxes only")
    ranks = ranks or Ranks()
    try:
        common = CommonOptions(max_boxes=max_boxes, min_side=min_side, dedupe=dedupe, max_side=max_side)
    except ProposalError as e:
        raise ArgumentError(str(e)) from None
    try:
        options = {"edge_model": edge_model} if method == "edgeboxes" else {}
        proposer = create_method(method, common, **options)
        items = [(image_id, dataset.image_path(image_id), dataset.annotated_size(image_id))
                 for image_id in dataset.ids]
        if ranks.sharded:
            summary = _run_sharded(ranks, proposer, items, out_dir, workers, progress)
            if summary is None:
                return None  # not rank 0: rank 0 reports for all
        else:
            summary = run_proposals(proposer, items, out_dir, workers=workers, progress=progress)
    except CacheMismatchError as e:
        raise ConfigMismatchError(str(e)) from None
    except ProposalError as e:
        raise DataError(str(e)) from None
    except OSError as e:  # e.g. out_dir not writable
        raise DataError(f"{e.filename or out_dir}: {e.strerror or e}") from None

    report = {"dataset": dataset.name, "method": proposer.name, **summary.to_dict()}
    save_json(out_dir / LAST_RUN_FILE, report)
    return {**report, "params": dict(proposer.params)}


def _run_sharded(ranks: Ranks, proposer: Any, items: list[tuple[Any, ...]], out_dir: Path,
                 workers: int | None, progress: bool) -> Any:
    """One rank's part of a sharded run: rank 0 opens OUT (checks the settings, writes
    meta.json, removes stale temporary files) and lists the images still to do; every rank
    proposes its share of them; rank 0 gets back the merged summary, the others None."""
    from proposals import CacheMismatchError, ProposalError, run_proposals
    from proposals.cache import ProposalCache
    from proposals.runner import RunSummary

    ids = [x[0] for x in items]
    if len(set(ids)) != len(ids):
        raise DataError(f"duplicate image ids: {', '.join(sorted({i for i in ids if ids.count(i) > 1})[:5])}")

    def open_cache() -> list[str]:
        try:
            cache = ProposalCache.create(out_dir, proposer.name, proposer.params)
        except CacheMismatchError as e:
            raise ConfigMismatchError(str(e)) from None
        except ProposalError as e:
            raise DataError(str(e)) from None
        return [i for i in ids if not cache.has(i)]

    todo = set(broadcast_json(ranks, main_first(ranks, open_cache)))
    mine = ranks.share([item for item in items if item[0] in todo])
    if workers is None:  # the node's cores, split between the ranks on it
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        workers = max(1, (os.cpu_count() or 1) // max(1, per_node))
    part = run_proposals(proposer, mine, out_dir, workers=workers, progress=progress and ranks.is_main,
                         cache=ProposalCache(out_dir))
    parts = all_gather_json(ranks, dataclasses.asdict(part))
    if not ranks.is_main:
        return None
    order = {i: k for k, i in enumerate(ids)}
    merged = RunSummary(total=len(items), skipped=len(items) - len(todo))
    merged.done = sum(p["done"] for p in parts)
    merged.failed = sorted((tuple(f) for p in parts for f in p["failed"]), key=lambda f: order[f[0]])
    merged.seconds = [x for p in parts for x in p["seconds"]]
    merged.boxes = [x for p in parts for x in p["boxes"]]
    merged.wall_seconds = max(p["wall_seconds"] for p in parts)
    return merged

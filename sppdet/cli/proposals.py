"""``sppdet proposals``: compute and cache region proposals for a data set split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from proposals import CommonOptions as C, available_methods
from sppdet.cli.options import dataset_options, default_of
from sppdet.data import VOCDataset
from sppdet.distributed import Ranks, all_gather_json, broadcast_json, main_first, sharded_run
from sppdet.errors import ConfigMismatchError, DataError, SppdetError

MAX_LISTED_FAILURES = 20


@click.command("proposals")
@dataset_options
@click.option("--method", default="ss-fast", show_default=True, type=click.Choice(available_methods()),
              help="Selective search (ss-fast, ss-quality) or EdgeBoxes (see docs/proposals.md).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Cache directory: meta.json plus one <image_id>.npz per image.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: the number of CPU cores).")
@click.option("--max-boxes", type=click.IntRange(min=1), default=default_of(C, "max_boxes"),
              show_default=True,
              help="Keep at most N boxes per image, best first.")
@click.option("--min-side", type=click.FloatRange(min=0), default=default_of(C, "min_side"),
              show_default=True,
              help="Drop boxes narrower or shorter than this (original pixels).")
@click.option("--dedupe/--no-dedupe", default=default_of(C, "dedupe"),
              show_default=True,
              help="Drop boxes equal to an earlier one after rounding to whole pixels.")
@click.option("--max-side", type=click.IntRange(min=0), default=default_of(C, "max_side"),
              show_default=True,
              help="Down-scale images whose longer side exceeds this before proposing "
                   "(boxes are scaled back); 0 never down-scales.")
@click.option("--edge-model", type=click.Path(path_type=Path), default=None,
              help="EdgeBoxes only: OpenCV's structured edge model (model.yml.gz); default "
                   "$SPPDET_EDGE_MODEL, else a Sobel-Canny fallback edge map.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def proposals_cmd(dataset: VOCDataset, method: str, out_dir: Path, workers: int | None,
                  max_boxes: int, min_side: float, dedupe: bool, max_side: int,
                  edge_model: Path | None, progress: bool) -> None:
    """Compute proposals for every image of a split into OUT, one file per image.

    Images already in OUT are skipped, so an interrupted run resumes where it stopped.
    OUT records the method and its parameters: running into it with other settings is
    refused. An image that cannot be read is reported and the others go on; the exit
    status is 1 if any image failed (rerun the same command to retry only those).
    Under torchrun, each rank does its share of the images (docs/large_datasets.md).
    """
    from proposals import CacheMismatchError, CommonOptions, ProposalError, create_method, run_proposals
    from sppdet.fileio import save_json

    if edge_model is not None and method != "edgeboxes":
        raise click.UsageError("--edge-model applies to --method edgeboxes only")
    try:
        common = CommonOptions(max_boxes=max_boxes, min_side=min_side, dedupe=dedupe, max_side=max_side)
        options = {"edge_model": edge_model} if method == "edgeboxes" else {}
        proposer = create_method(method, common, **options)
        items = [(image_id, dataset.image_path(image_id), dataset.annotated_size(image_id))
                 for image_id in dataset.ids]
        with sharded_run() as ranks:
            if ranks.sharded:
                summary = _run_sharded(ranks, proposer, items, out_dir, workers, progress)
                if summary is None:
                    return  # not rank 0: rank 0 reports for all
            else:
                summary = run_proposals(proposer, items, out_dir, workers=workers, progress=progress)
    except CacheMismatchError as e:
        raise ConfigMismatchError(str(e)) from None
    except ProposalError as e:
        raise DataError(str(e)) from None
    except OSError as e:  # e.g. --out not writable
        raise DataError(f"{e.filename or out_dir}: {e.strerror or e}") from None

    report = summary.to_dict()
    save_json(out_dir / "last_run.json", {"dataset": dataset.name, "method": proposer.name, **report})
    if proposer.params.get("edges") == "sobel-canny-fallback":
        click.echo("EdgeBoxes ran on the Sobel-Canny fallback edge map (no structured edge model "
                   "given); see docs/benchmarks.md for its recall.")
    click.echo(f"proposals {proposer.name} -> {out_dir}: {summary.total} images: {summary.done} done, "
               f"{summary.skipped} skipped (already cached), {len(summary.failed)} failed")
    if summary.done:
        click.echo(f"  {report['median_seconds_per_image']:.2f} s per image (median, one worker), "
                   f"{report['mean_boxes_per_image']:.0f} boxes per image (mean), "
                   f"{summary.wall_seconds:.0f} s in all")
    for image_id, reason in summary.damaged[:MAX_LISTED_FAILURES]:
        click.echo(f"  recomputed damaged file of {image_id}: {reason}")
    for image_id, reason in summary.failed[:MAX_LISTED_FAILURES]:
        click.echo(f"  failed {image_id}: {reason}")
    if len(summary.failed) > MAX_LISTED_FAILURES:
        click.echo(f"  ... and {len(summary.failed) - MAX_LISTED_FAILURES} more "
                   f"(all listed in {out_dir / 'last_run.json'})")
    if summary.failed:
        raise SppdetError(f"{len(summary.failed)} of {summary.total} images failed (listed above); "
                          f"the others are cached. Fix or drop those images and run the same "
                          f"command again to do only them.")


def _run_sharded(ranks: Ranks, proposer: Any, items: list[tuple[Any, ...]], out_dir: Path,
                 workers: int | None, progress: bool) -> Any:
    """One rank's part of a sharded run: rank 0 opens OUT (checks the settings, writes
    meta.json, removes stale temporary files) and lists the images still to do; every rank
    proposes its share of them; rank 0 gets back the merged summary, the others None."""
    import dataclasses
    import os

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

"""``sppdet proposals``: compute and cache region proposals for a data set split."""

from __future__ import annotations

from pathlib import Path

import click

from proposals import DEFAULT_METHOD, CommonOptions as C, available_methods
from sppdet.cli.options import dataset_options, default_of
from sppdet.data import VOCDataset
from sppdet.distributed import sharded_run
from sppdet.errors import SppdetError

MAX_LISTED_FAILURES = 20


@click.command("proposals")
@dataset_options
@click.option("--method", default=DEFAULT_METHOD, show_default=True, type=click.Choice(available_methods()),
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
    from sppdet.pipeline.proposals import LAST_RUN_FILE, compute_proposals

    if edge_model is not None and method != "edgeboxes":
        raise click.UsageError("--edge-model applies to --method edgeboxes only")
    with sharded_run() as ranks:
        report = compute_proposals(dataset, out_dir, method=method, max_boxes=max_boxes,
                                   min_side=min_side, dedupe=dedupe, max_side=max_side,
                                   edge_model=edge_model, workers=workers, progress=progress,
                                   ranks=ranks)
    if report is None:
        return  # not rank 0: rank 0 reports for all
    if report["params"].get("edges") == "sobel-canny-fallback":
        click.echo("EdgeBoxes ran on the Sobel-Canny fallback edge map (no structured edge model "
                   "given); see docs/benchmarks.md for its recall.")
    click.echo(f"proposals {report['method']} -> {out_dir}: {report['total']} images: {report['done']} done, "
               f"{report['skipped']} skipped (already cached), {report['failed']} failed")
    if report["done"]:
        click.echo(f"  {report['median_seconds_per_image']:.2f} s per image (median, one worker), "
                   f"{report['mean_boxes_per_image']:.0f} boxes per image (mean), "
                   f"{report['wall_seconds']:.0f} s in all")
    for item in report["damaged"][:MAX_LISTED_FAILURES]:
        click.echo(f"  recomputed damaged file of {item['image_id']}: {item['reason']}")
    for item in report["failures"][:MAX_LISTED_FAILURES]:
        click.echo(f"  failed {item['image_id']}: {item['reason']}")
    if report["failed"] > MAX_LISTED_FAILURES:
        click.echo(f"  ... and {report['failed'] - MAX_LISTED_FAILURES} more "
                   f"(all listed in {out_dir / LAST_RUN_FILE})")
    if report["failed"]:
        raise SppdetError(f"{report['failed']} of {report['total']} images failed (listed above); "
                          f"the others are cached. Fix or drop those images and run the same "
                          f"command again to do only them.")


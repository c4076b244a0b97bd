"""``sppdet data-stats``: what a VOC-format data set holds."""

from __future__ import annotations

import json
import logging

import click

from sppdet.cli.options import dataset_options
from sppdet.data import VOCDataset
from sppdet.data.stats import dataset_stats


@click.command("data-stats")
@dataset_options
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def data_stats(dataset: VOCDataset, as_json: bool) -> None:
    """Count images, objects, difficult objects and objects per class of a split."""
    logging.getLogger("sppdet.data").setLevel(logging.ERROR)  # issues are summarised below
    stats = dataset_stats(dataset, progress=not as_json)
    if as_json:
        click.echo(json.dumps({"root": str(dataset.root), "split": dataset.split,
                               **stats.to_dict()}, indent=2))
        return
    click.echo(f"{dataset.root} ({dataset.split or 'id list'}): {stats.images} images, "
               f"{stats.objects} objects, {stats.difficult} difficult")
    width = max(len(c) for c in dataset.classes)
    click.echo(f"{'class':<{width}}  {'images':>7}  {'objects':>7}  {'difficult':>9}")
    for name, row in stats.per_class.items():
        click.echo(f"{name:<{width}}  {row['images']:>7}  {row['objects']:>7}  {row['difficult']:>9}")
    if stats.box_issues:
        click.echo(f"Boxes fixed by the documented rule: {stats.boxes_clipped} clipped to the "
                   f"image, {stats.boxes_dropped} dropped as degenerate:")
        for issue in stats.box_issues:
            click.echo(f"  {issue['image']} {issue['class']} {issue['voc_box']}: "
                       f"{issue['action']} ({issue['reason']})")

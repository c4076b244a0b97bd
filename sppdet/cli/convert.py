"""``sppdet convert``: write a data set (VOC or COCO format) out as a COCO annotation JSON."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from sppdet.cli.options import dataset_options
from sppdet.data import COCODataset, VOCDataset
from sppdet.fileio import atomic_path


@click.command("convert")
@dataset_options
@click.option("--out", "out_file", type=click.Path(path_type=Path), required=True,
              help="COCO annotation JSON to write.")
@click.option("--images-root", type=click.Path(path_type=Path), default=None,
              help="Folder the written file_name entries are relative to (default: the folder "
                   "of the images, e.g. JPEGImages/); give it as --images when reading the file.")
def convert(dataset: VOCDataset | COCODataset, out_file: Path, images_root: Path | None) -> None:
    """Write the images and ground truth of a split as COCO JSON (instances format).

    Images are numbered 1, 2, ... in the split's order ("sppdet_id" keeps the original id),
    class k becomes category k + 1, difficult objects become iscrowd 1 with area w * h, and
    boxes are those after the documented box rule. `sppdet eval` on the written file then
    gives the same numbers as on the original data set (VOC APs and COCO metrics alike).
    """
    from sppdet.data.coco import dataset_to_coco

    logging.getLogger("sppdet.data").setLevel(logging.ERROR)  # box fixes are counted below
    data = dataset_to_coco(dataset, images_root)
    with atomic_path(out_file) as tmp:
        tmp.write_text(json.dumps(data) + "\n")
    images_dir = images_root or (Path(dataset.image_path(dataset.ids[0])).parent if dataset.ids else ".")
    click.echo(f"{out_file}: {len(data['images'])} images, {len(data['annotations'])} objects "
               f"({sum(a['iscrowd'] for a in data['annotations'])} crowd / difficult), "
               f"{len(data['categories'])} categories; read it with "
               f"--coco {out_file} --images {images_dir}")
    if dataset.box_issues:
        click.echo(f"  {len(dataset.box_issues)} boxes were clipped or dropped by the box rule "
                   f"(see `sppdet data-stats`)")

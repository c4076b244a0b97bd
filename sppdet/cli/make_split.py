"""``sppdet make-split``: a fixed, seeded train / validation split of a split list."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.cli.options import dataset_options
from sppdet.data import VOCDataset
from sppdet.data.splits import random_split, write_id_list


@click.command("make-split")
@dataset_options
@click.option("--val", "val_count", type=click.IntRange(min=1), required=True,
              help="Number of ids for the validation part.")
@click.option("--seed", default=0, show_default=True, help="Seed of the permutation.")
@click.option("--out", "out_prefix", type=click.Path(path_type=Path), required=True,
              help="Prefix: writes PREFIX_train.txt and PREFIX_val.txt.")
def make_split(dataset: VOCDataset, val_count: int, seed: int, out_prefix: Path) -> None:
    """Write a seeded development split (for tuning without touching a test set)."""
    if val_count >= len(dataset.ids):
        raise click.BadParameter(f"--val {val_count} must be below the {len(dataset.ids)} ids",
                                 param_hint="--val")
    train, val = random_split(dataset.ids, val_count, seed)
    for part, ids in (("train", train), ("val", val)):
        path = out_prefix.parent / f"{out_prefix.name}_{part}.txt"
        write_id_list(path, ids)
        click.echo(f"{path}: {len(ids)} ids")

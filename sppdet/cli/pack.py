"""``sppdet pack``: a copy of a model with its weight matrices stored in int8 or float16."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("pack")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--storage", type=click.Choice(["int8", "float16"]), default="int8", show_default=True,
              help="int8: one scale per row (fc unit, class), a quarter of float32; float16: half.")
def pack(src: Path, dst: Path, storage: str) -> None:
    """Write model SRC into DST with its weight matrices stored as STORAGE (for shipping);
    biases stay float32 and everything loads back as float32."""
    from sppdet.models.pack import pack_model

    before, after = pack_model(src, dst, storage)
    click.echo(f"{src} ({before / 2**20:.1f} MB) -> {dst} ({after / 2**20:.1f} MB, {storage})")

"""``sppdet pack``: a copy of a model with its weight matrices stored in int8 or float16."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("pack")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--storage", type=click.Choice(["int8", "float16"]), default="int8", show_default=True,
              help="int8: one scale per row (fc unit, class), a quarter of float32; float16: half.")
@click.option("--fc6-rank", type=click.IntRange(min=1), default=None,
              help="Head fc7: store fc6's weights as a rank-N product (truncated SVD, as in Fast "
                   "R-CNN); measure the mAP it costs with `sppdet eval`.")
@click.option("--calibrate", nargs=2, type=click.Path(path_type=Path), default=None,
              metavar="FEATURES PROPOSALS",
              help="With --fc6-rank: fit the low-rank fc6 to its inputs on 30,000 windows of these "
                   "caches (the training ones) instead of a plain truncated SVD.")
def pack(src: Path, dst: Path, storage: str, fc6_rank: int | None,
         calibrate: tuple[Path, Path] | None) -> None:
    """Write model SRC into DST with its weight matrices stored as STORAGE (for shipping);
    biases stay float32 and everything loads back as float32."""
    from sppdet.models.pack import pack_model

    before, after = pack_model(src, dst, storage, fc6_rank, calibrate or None)
    rank = f", fc6 rank {fc6_rank}" if fc6_rank else ""
    click.echo(f"{src} ({before / 2**20:.1f} MB) -> {dst} ({after / 2**20:.1f} MB, {storage}{rank})")

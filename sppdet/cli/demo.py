"""``sppdet demo``: the shipped model on scikit-image's sample photographs."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.cli.detect import detect
from sppdet.cli.options import device_option


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("demo_out"),
              show_default=True, help="Folder for the sample images, annotated images and JSON.")
@click.option("--model", "model_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Model directory (default: the shipped VOC 2007 model).")
@device_option
@click.pass_context
def demo(ctx: click.Context, out_dir: Path, model_dirs: tuple[Path, ...], device: str | None) -> None:
    """Detect objects in three sample photographs (a cat, a person, a motorbike)."""
    from sppdet.demo import write_samples

    images = write_samples(out_dir / "images")
    click.echo(f"Sample images (scikit-image) written to {out_dir / 'images'}/")
    ctx.invoke(detect, inputs=tuple(images), model_dirs=model_dirs,
               json_path=out_dir / "detections.json", draw_dir=out_dir / "annotated",
               device=device)

"""``sppdet analyze``: where a detector's false positives come from (Hoiem et al., 2012)."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.cli.options import dataset_options, device_option
from sppdet.data import VOCDataset


@click.command("analyze")
@dataset_options
@click.option("--detections", "detections_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of devkit result files comp4_det_<split>_<class>.txt (e.g. eval --out).")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="Model folder: run detection over the split first.")
@click.option("--proposals", "proposals_dir", type=click.Path(path_type=Path), default=None,
              help="With --model: proposal cache to reuse.")
@click.option("--features", "features_dir", type=click.Path(path_type=Path), default=None,
              help="With --model: conv-feature cache to reuse.")
@device_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Writes error_analysis_<split>.json and error_analysis_<split>.png here.")
def analyze_cmd(dataset: VOCDataset, detections_dir: Path | None, model_dir: Path | None,
                proposals_dir: Path | None, features_dir: Path | None, device: str | None,
                out_dir: Path) -> None:
    """For each class's top-ranked detections, the share that are correct (Cor), poorly
    localised (Loc), confused with a similar class (Sim) or another class (Oth), or on
    background (BG); one stacked plot per group (animals, vehicles, furniture, all)."""
    from sppdet.evaluation.error_analysis import TYPES, analyze, plot_analysis
    from sppdet.evaluation.pipeline import load_annotations, load_or_run_detections
    from sppdet.fileio import save_json

    split_name = dataset.split or "ids"
    kwargs = {}
    if model_dir is not None:
        kwargs = {"proposals_dir": proposals_dir, "features_dir": features_dir, "device": device}
    elif proposals_dir or features_dir or device:
        raise click.UsageError("--proposals, --features and --device only apply with --model")
    dets = load_or_run_detections(dataset, split_name, detections_dir=detections_dir,
                                  model_dir=model_dir, **kwargs)
    result = analyze(dets, load_annotations(dataset), dataset.classes)
    json_path = out_dir / f"error_analysis_{split_name}.json"
    save_json(json_path, result)
    png = plot_analysis(result, out_dir / f"error_analysis_{split_name}.png",
                        f"{dataset.name}: top detections by type")
    k = result["multiples"].index(1.0) if 1.0 in result["multiples"] else 0
    click.echo(f"{'group':<10} " + " ".join(f"{t:>5}" for t in TYPES)
               + "   (shares among the top N detections, N = number of objects)")
    for name, g in result["groups"].items():
        click.echo(f"{name:<10} " + " ".join(f"{g['shares'][k][t]:5.2f}" for t in TYPES))
    click.echo(f"wrote {json_path} and {png}")

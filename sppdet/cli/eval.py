"""``sppdet eval``: PASCAL VOC (and COCO-style) evaluation of a split's detections."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.cli.options import dataset_options, device_option, proposal_workers, share_cores, speed_options
from sppdet.data import COCODataset, VOCDataset
from sppdet.defaults import BBOX_REG, COCO_METRICS
from sppdet.distributed import rank_device, ranks_from_env, sharded_run


def use_model_classes(dataset: VOCDataset | COCODataset, model_dir: Path, classes_given: bool) -> None:
    """With --model, the data set's classes are the model's: a VOC data set without
    --classes takes them (in the model's order); given --classes, or a COCO file's
    categories, must be the model's, else an error names the classes that differ."""
    from sppdet.errors import ConfigMismatchError
    from sppdet.heads.model_dir import CONFIG_FILE, read_config

    if not Path(model_dir).is_dir():
        return  # loading the model reports it
    model_classes = read_config(model_dir).get("classes")
    if not isinstance(model_classes, list) or not model_classes:
        return  # load_model reports the model's problem
    if isinstance(dataset, VOCDataset) and not classes_given:
        dataset.classes = tuple(model_classes)
        return
    ours = list(dataset.classes)
    if ours != model_classes:
        source = "--classes" if isinstance(dataset, VOCDataset) else "the COCO file's categories"
        only_model = [c for c in model_classes if c not in ours]
        only_data = [c for c in ours if c not in model_classes]
        what = ", ".join(filter(None, [
            f"only in the model: {', '.join(only_model)}" if only_model else "",
            f"only in {source}: {', '.join(only_data)}" if only_data else "",
            "same names in another order" if not only_model and not only_data else ""]))
        hint = " (leave out --classes to use the model's)" if isinstance(dataset, VOCDataset) else ""
        raise ConfigMismatchError(f"{Path(model_dir) / CONFIG_FILE}: the model's classes differ from "
                                  f"{source} ({what}){hint}")


@click.command("eval")
@dataset_options
@click.option("--detections", "detections_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of existing devkit result files comp4_det_<split>_<class>.txt.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="Model folder: run detection over the split, then evaluate.")
@click.option("--proposals", "proposals_dir", type=click.Path(path_type=Path), default=None,
              help="With --model: proposal cache to reuse.")
@click.option("--features", "features_dir", type=click.Path(path_type=Path), default=None,
              help="With --model: conv-feature cache to reuse.")
@click.option("--weights", "weights_file", type=click.Path(path_type=Path), default=None,
              help="With --model: the backbone weights file the model's features were "
                   "extracted with (`sppdet extract --weights FILE`); checked against the "
                   "sha256 the model records.")
@click.option("--bbox-reg/--no-bbox-reg", default=BBOX_REG, show_default=True,
              help="With --model: apply the model's box regression.")
@click.option("--max-proposals", type=click.IntRange(min=1), default=None,
              help="With --model: score only each image's first N proposals (in the proposal "
                   "method's ranking), to measure what fewer windows cost.")
@device_option
@speed_options
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder: result files (with --model), eval_<split>.txt, pr_curves_<split>.png; "
                   "for a --coco data set also coco_results_<split>.json.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the metrics as JSON (APs as fractions in [0, 1]).")
@click.option("--coco-metrics/--no-coco", "coco_metrics", default=COCO_METRICS, show_default=True,
              help="Also compute COCO AP@[0.5:0.95], AP50, AP75 and AP by object size with pycocotools.")
@click.option("--save-display-thresholds", is_flag=True,
              help="With --model: store each class's F1-optimal score threshold on this split "
                   "in the model's config.json; `sppdet detect` shows detections above them. "
                   "Use a validation split, never a test set.")
@click.option("--thresholds-into", "thresholds_dir", type=click.Path(path_type=Path), default=None,
              help="With --save-display-thresholds: write them into this model directory "
                   "instead of --model's (e.g. the same recipe retrained on all the data).")
def eval_cmd(dataset: VOCDataset | COCODataset, detections_dir: Path | None, model_dir: Path | None,
             proposals_dir: Path | None, features_dir: Path | None, weights_file: Path | None,
             bbox_reg: bool, max_proposals: int | None,
             device: str | None, preset: str, workers: int | None, overlap: bool,
             precision: str | None, out_dir: Path | None,
             json_path: Path | None, coco_metrics: bool,
             save_display_thresholds: bool, thresholds_dir: Path | None) -> None:
    """Evaluate detections of a split the VOC 2007 devkit way (11-point AP, IoU >= 0.5,
    difficult objects ignored), with the area AP and COCO AP@[0.5:0.95] beside it.
    On a --coco data set the COCO metrics use the file's own ground truth (areas, crowds).
    Under torchrun, each rank detects in its share of the images and rank 0 evaluates.

    Give either --detections DIR (result files that exist) or --model DIR, and the images:
    --split NAME or --ids FILE (--voc; there is no default split). With --model the classes
    are the model's (--classes, if given, must list the same).
    """
    from sppdet.evaluation.pipeline import evaluate, save_display_thresholds as save, write_report

    ctx = click.get_current_context()

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE

    if isinstance(dataset, VOCDataset) and dataset.split is not None and not given("split"):
        # It used to default to train silently: a model's own training images.
        raise click.UsageError("say which images to evaluate: --split NAME (e.g. val or test) "
                               "or --ids FILE")
    if model_dir is not None:
        use_model_classes(dataset, model_dir, classes_given=given("classes_file"))
    if thresholds_dir is not None and not save_display_thresholds:
        raise click.UsageError("--thresholds-into needs --save-display-thresholds")
    if model_dir is None and (proposals_dir or features_dir or device or save_display_thresholds
                              or preset != "model" or workers or weights_file or max_proposals
                              or precision):
        raise click.UsageError("--proposals, --features, --weights, --device, --preset, --workers, --precision, "
                               "--max-proposals and --save-display-thresholds only apply with --model")
    computes_proposals = model_dir is not None and proposals_dir is None and not ranks_from_env().sharded
    workers = proposal_workers(workers, len(dataset.ids) if computes_proposals else 0, overlap)
    if workers:
        share_cores(workers)
    elif overlap and model_dir is not None and proposals_dir is None:
        share_cores(1)  # the proposal thread's core
    if model_dir is not None:
        from sppdet.perf import tune_allocator

        tune_allocator()
    with sharded_run(device if model_dir is not None else "cpu") as ranks:
        if ranks.sharded and model_dir is not None:
            device = rank_device(device, ranks)
        elif not ranks.is_main:
            return  # only detection is sharded; rank 0 evaluates result files alone
        report = evaluate(dataset, model_dir=model_dir, detections_dir=detections_dir,
                          proposals_dir=proposals_dir, features_dir=features_dir, device=device,
                          bbox_reg=bbox_reg, out_dir=out_dir, coco_metrics=coco_metrics,
                          preset=None if preset == "model" else preset, workers=workers,
                          ranks=ranks if ranks.sharded else None, weights=weights_file,
                          max_proposals=max_proposals, overlap=None if overlap else False,
                          precision=precision)
    if report is None:
        return  # not rank 0: rank 0 evaluated everything once
    if report.ignored_detections:
        click.echo(f"--limit {dataset.limit}: ignored {report.ignored_detections} detections on "
                   "later images", err=True)
    click.echo(f"{dataset.name}: {report.images} images")
    click.echo(report.table)
    pooled = report.pooled_operating_point
    if pooled is not None:
        click.echo(f"F1-optimal score threshold (all classes ranked together): {pooled.threshold:.3f} "
                   f"(precision {pooled.precision:.2f}, recall {pooled.recall:.2f})")
    for path in write_report(report, dataset.split or "ids", out_dir=out_dir, json_path=json_path,
                             dataset=dataset):
        click.echo(f"wrote {path}")
    if save_display_thresholds:
        path, entry = save(report, dataset, model_dir, thresholds_dir)
        click.echo(f"display thresholds ({len(entry['display_thresholds'])} classes) written to {path}")


# eval has no default split (see above): its --split help says so instead of "[default: train]".
for _param in eval_cmd.params:
    if _param.name == "split" and isinstance(_param, click.Option):
        _param.show_default = False
        _param.help = ("Split list ImageSets/Main/<split>.txt (--voc only; eval has no default: "
                       "give --split or --ids).")

"""``sppdet detect``: detect objects in images with one or more trained models."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from sppdet.cli.options import device_option
from sppdet.data.voc import IMAGE_SUFFIXES, read_image
from sppdet.errors import DataError, SppdetError
from sppdet.fileio import atomic_path, save_json

log = logging.getLogger(__name__)

# SVM score above which `detect` shows a window when neither --score-thresh nor the model's
# display thresholds (`sppdet eval --save-display-thresholds`) say otherwise; evaluation
# keeps everything above the model's score_threshold (-1.5).
DEFAULT_DISPLAY_THRESHOLD = -0.5


def display_thresholds(test: dict[str, Any], classes: list[str],
                       score_thresh: float | None) -> tuple[float, tuple[float, ...] | None]:
    """(global threshold, per-class thresholds or None) for showing detections: --score-thresh
    when given; else the model's per-class display thresholds (a class without one gets the
    model's display_threshold); else the model's display_threshold or the default."""
    overall = float(test.get("display_threshold", DEFAULT_DISPLAY_THRESHOLD))
    if score_thresh is not None:
        return float(score_thresh), None
    per_class = test.get("display_thresholds")
    if not per_class:
        return overall, None
    return overall, tuple(float(per_class.get(c, overall)) for c in classes)


def collect_images(inputs: tuple[Path, ...]) -> list[Path]:
    """Image files given directly or found (not recursively) in the given folders."""
    images: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in IMAGE_SUFFIXES and q.is_file())
            if not found:
                click.secho(f"Warning: {p}: no image files in this folder", fg="yellow", err=True)
            images.extend(found)
        else:
            images.append(p)
    return images


def detections_to_json(image: Path, hw: tuple[int, int], dets: Any, classes: list[str]) -> dict:
    return {
        "image": str(image), "width": int(hw[1]), "height": int(hw[0]),
        "detections": [
            {"class": classes[int(l)], "score": round(float(s), 4),
             "box": [round(float(v), 2) for v in b]}
            for b, s, l in zip(dets.boxes, dets.scores, dets.labels)],
    }


@click.command("detect")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Model directory; repeat to combine models (NMS on the union of their "
                   "scored windows). Default: the shipped VOC 2007 model.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write every detection (image, class, score, box) to this JSON file.")
@click.option("--draw", "draw_dir", type=click.Path(path_type=Path), default=None,
              help="Write each image with its labelled boxes into this folder.")
@click.option("--score-thresh", type=float, default=None,
              help="Keep detections scoring above this SVM score, in every class (default: "
                   "the model's per-class display thresholds, F1-optimal on its validation "
                   "split).")
@click.option("--nms", "nms_iou", type=click.FloatRange(0, 1), default=None,
              help="IoU of per-class non-maximum suppression (default: the model's, 0.3).")
@click.option("--max-per-image", type=click.IntRange(min=1), default=None,
              help="Keep at most this many detections per image (default 100).")
@click.option("--proposals", "proposal_method", default=None,
              help="Proposal method (ss-fast, ss-quality, edgeboxes; default: the model's).")
@device_option
def detect(inputs: tuple[Path, ...], model_dirs: tuple[Path, ...], json_path: Path | None,
           draw_dir: Path | None, score_thresh: float | None, nms_iou: float | None,
           max_per_image: int | None, proposal_method: str | None, device: str | None) -> None:
    """Detect objects in IMAGE files or folders of images.

    Boxes are (x1, y1, x2, y2) in the image's own pixels (continuous coordinates: a box
    covering pixel columns 0..9 is x1 = 0, x2 = 10).
    """
    import cv2

    from sppdet.detector import DetectionParams, Detector, load_models, proposer_for
    from sppdet.models import shipped_model_dir
    from sppdet.visualize import draw_detections

    images = collect_images(inputs)
    if not images:
        raise SppdetError("no images to detect in")
    dirs = list(model_dirs) or [shipped_model_dir()]
    models = load_models(dirs, "cpu")
    test = models[0].config.get("test", {})
    threshold, per_class = display_thresholds(test, models[0].classes, score_thresh)
    params = DetectionParams.from_model(models[0], score_threshold=threshold, nms_iou=nms_iou,
                                        max_per_image=max_per_image, class_thresholds=per_class)
    proposer = proposer_for(models[0].config.get("proposals", {}), proposal_method)
    detector = Detector(models, device, params, proposer)
    classes = detector.classes
    results, failed = [], []
    for path in images:
        try:
            image = read_image(path)
        except DataError as e:
            click.secho(f"Skipped: {e}", fg="yellow", err=True)
            failed.append({"image": str(path), "error": str(e)})
            continue
        dets = detector.detect(image, image_id=path.stem)
        results.append(detections_to_json(path, image.shape[:2], dets, classes))
        found = ", ".join(f"{classes[int(l)]} {s:.2f}" for s, l in zip(dets.scores[:8], dets.labels[:8]))
        more = f", ... ({len(dets.scores)} in all)" if len(dets.scores) > 8 else ""
        click.echo(f"{path}: {len(dets.scores)} detections" + (f": {found}{more}" if found else ""))
        if draw_dir is not None:
            out = draw_dir / f"{path.stem}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(out) as tmp:
                if not cv2.imwrite(str(tmp.with_suffix(".jpg")), draw_detections(image, dets, classes)):
                    raise SppdetError(f"{out}: cannot write image")
                tmp.with_suffix(".jpg").replace(tmp)
    if json_path is not None:
        thresholds = dict(zip(classes, params.thresholds(len(classes)).tolist()))
        save_json(json_path, {"models": [str(d) for d in dirs], "score_thresholds": thresholds,
                              "images": results, "failed": failed})
        click.echo(f"Detections written to {json_path}")
    if draw_dir is not None and results:
        click.echo(f"Annotated images written to {draw_dir}/")
    if failed and not results:
        raise SppdetError(f"no image could be read ({len(failed)} failed)")

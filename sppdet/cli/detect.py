"""``sppdet detect``: detect objects in images with one or more trained models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import click
import numpy as np

from sppdet.cli.options import device_option, proposal_workers, share_cores, speed_options
from sppdet.data.voc import IMAGE_SUFFIXES, read_image
from sppdet.defaults import MAX_PER_IMAGE, NMS_IOU
from sppdet.errors import DataError, SppdetError
from sppdet.fileio import save_json


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


def drawn_paths(images: list[Path], draw_dir: Path) -> list[Path]:
    """The --draw output of each image: ``DIR/<stem>.jpg``, or ``<stem>_2.jpg``, ... when an
    earlier image has the same stem or the name is one of the input files: one output never
    overwrites another, nor an input."""
    inputs = {p.resolve() for p in images}
    used: set[str] = set()
    out = []
    for p in images:
        k = 1
        while True:
            name = f"{p.stem}.jpg" if k == 1 else f"{p.stem}_{k}.jpg"
            if name not in used and (draw_dir / name).resolve() not in inputs:
                break
            k += 1
        used.add(name)
        out.append(draw_dir / name)
    return out


def check_writable(path: Path, option: str, folder: bool) -> None:
    """Fail before the work when an output of ``option`` cannot be written."""
    import tempfile

    if not folder and path.is_dir():
        raise SppdetError(f"{path}: is a folder; {option} takes a file name")
    if folder and path.exists() and not path.is_dir():
        raise SppdetError(f"{path}: is a file; {option} takes a folder")
    target = path if folder else path.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as e:
        raise SppdetError(f"{path}: cannot write the {option} output there "
                          f"({e.strerror or e})") from None


@click.command("detect")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Model directory; repeat to combine models (NMS on the union of their "
                   "scored windows). Default: the shipped VOC 2007 model.")
@click.option("--weights", "weights_files", multiple=True, type=click.Path(path_type=Path),
              help="The backbone weights file of a model whose features were extracted with "
                   "`sppdet extract --weights FILE` (checked against the sha256 the model "
                   "records); repeat for combined models with different files.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write every detection (image, class, score, box) to this JSON file.")
@click.option("--draw", "draw_dir", type=click.Path(path_type=Path), default=None,
              help="Write each image with its labelled boxes into this folder.")
@click.option("--score-thresh", type=float, default=None,
              help="Keep detections scoring above this SVM score, in every class (default: "
                   "the model's per-class display thresholds, F1-optimal on its validation "
                   "split).")
@click.option("--nms", "nms_iou", type=click.FloatRange(0, 1), default=None,
              help=f"IoU of per-class non-maximum suppression (default: the model's, {NMS_IOU}).")
@click.option("--max-per-image", type=click.IntRange(min=1), default=None,
              help=f"Keep at most this many detections per image (default: the model's, "
                   f"{MAX_PER_IMAGE}).")
@click.option("--proposals", "proposal_method", default=None,
              help="Proposal method (ss-fast, ss-quality, edgeboxes; default: the model's).")
@speed_options
@device_option
def detect(inputs: tuple[Path, ...], model_dirs: tuple[Path, ...], weights_files: tuple[Path, ...],
           json_path: Path | None,
           draw_dir: Path | None, score_thresh: float | None, nms_iou: float | None,
           max_per_image: int | None, proposal_method: str | None, preset: str, workers: int | None,
           overlap: bool, precision: str | None, device: str | None) -> None:
    """Detect objects in IMAGE files or folders of images.

    Boxes are (x1, y1, x2, y2) in the image's own pixels (continuous coordinates: a box
    covering pixel columns 0..9 is x1 = 0, x2 = 10).
    """
    from sppdet.detector import Detector
    from sppdet.perf import tune_allocator
    from sppdet.result import DetectionResult
    from sppdet.visualize import write_annotated

    images = collect_images(inputs)
    if not images:
        raise SppdetError("no images to detect in")
    if json_path is not None:
        check_writable(json_path, "--json", folder=False)
    if draw_dir is not None:
        check_writable(draw_dir, "--draw", folder=True)
        drawn = dict(zip(images, drawn_paths(images, draw_dir)))
    tune_allocator()
    detector = Detector.load(list(model_dirs) or None, device, score_threshold=score_thresh,
                             nms_iou=nms_iou, max_per_image=max_per_image,
                             proposals=proposal_method, preset=preset,
                             weights=list(weights_files), precision=precision)
    classes = detector.classes
    results, failed = [], []

    def readable() -> Iterator[tuple[Path, np.ndarray, bool]]:
        for path in images:
            try:
                yield path, read_image(path), True
            except DataError as e:
                click.secho(f"Skipped: {e}", fg="yellow", err=True)
                failed.append({"image": str(path), "error": str(e)})

    workers = proposal_workers(workers, len(images), overlap)
    parallel = workers and len(images) > 1
    if parallel:
        share_cores(workers)
    elif overlap:
        share_cores(1)  # the proposal thread's core
    detector.overlap = overlap and detector.overlaps
    if parallel:
        from sppdet.proposal_prefetch import prefetch

        stream: Iterable[tuple[Path, Any, Callable[[], Any]]] = prefetch(
            detector.proposal_method(), readable(), workers)
    elif detector.overlap:
        from sppdet.proposal_prefetch import prefetch_threaded

        stream = prefetch_threaded(detector.propose, readable())
    else:
        stream = ((p, im, lambda im=im: detector.propose(im)) for p, im, _ in readable())
    for path, image, get_proposals in stream:
        maps = detector.conv_maps(image)  # while the workers compute the next images' proposals
        dets = detector.detect(image, image_id=path.stem, proposals=get_proposals(), maps=maps)
        result = DetectionResult.from_detections(dets, classes, image.shape[:2], str(path))
        results.append(result.to_dict())
        found = ", ".join(f"{d.class_name} {d.score:.2f}" for d in list(result)[:8])
        more = f", ... ({len(result)} in all)" if len(result) > 8 else ""
        click.echo(f"{path}: {len(result)} detections" + (f": {found}{more}" if found else ""))
        if draw_dir is not None:
            write_annotated(drawn[path], image, result, classes)
    if json_path is not None:
        thresholds = dict(zip(classes, detector.params.thresholds(len(classes)).tolist()))
        save_json(json_path, {"models": [str(m.path) for m in detector.models],
                              "score_thresholds": thresholds, "images": results, "failed": failed})
        click.echo(f"Detections written to {json_path}")
    if draw_dir is not None and results:
        click.echo(f"Annotated images written to {draw_dir}/")
    if failed and not results:
        raise SppdetError(f"no image could be read ({len(failed)} failed)")

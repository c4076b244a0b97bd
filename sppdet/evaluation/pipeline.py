"""Evaluation of a whole split: get the detections (result files or a model), score them,
write the outputs. The CLI's ``sppdet eval`` is a thin layer over these functions."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sppdet.defaults import BBOX_REG, COCO_METRICS, PROPOSAL_WORKERS
from sppdet.distributed import Ranks, all_gather_json
from sppdet.detections import ClassDetections, Detections, group_by_class
from sppdet.errors import ArgumentError, ConfigMismatchError, SppdetError
from sppdet.evaluation.coco import coco_evaluate, coco_evaluate_dataset
from sppdet.evaluation.plots import plot_pr_curves
from sppdet.evaluation.report import format_table, result_to_json
from sppdet.evaluation.result_files import read_result_files, write_result_files
from sppdet.evaluation.thresholds import OperatingPoint, f1_thresholds, pooled_f1_operating_point
from sppdet.evaluation.voc import AnnotationLike, EvalResult, evaluate_detections
from sppdet.fileio import atomic_path, save_json


def run_detector(model_dir: str | os.PathLike, dataset: Any, **detect_kwargs: Any) -> Iterable[Detections]:
    """Detections of every image of ``dataset`` from the model in ``model_dir``, through
    ``sppdet.detector.detect_dataset`` (imported only when a model is evaluated)."""
    try:
        detector = importlib.import_module("sppdet.detector")
    except ModuleNotFoundError as e:
        if e.name != "sppdet.detector":
            raise
        raise SppdetError("--model needs sppdet.detector, which this build does not have; "
                          "evaluate existing result files with --detections DIR") from None
    return detector.detect_dataset(model_dir, dataset, **detect_kwargs)


def run_detector_sharded(model_dir: str | os.PathLike, dataset: Any, ranks: Ranks,
                         **detect_kwargs: Any) -> list[Detections] | None:
    """This rank's share of ``run_detector``, gathered on rank 0 in ``dataset.ids`` order
    (None on the other ranks). Detections travel as JSON (floats round-trip exactly)."""
    share = copy.copy(dataset)
    share.ids = ranks.share(list(dataset.ids))
    detect_kwargs["progress"] = detect_kwargs.get("progress", True) and ranks.is_main
    mine = [{"image_id": d.image_id, "boxes": d.boxes.tolist(), "scores": d.scores.tolist(),
             "labels": d.labels.tolist()} for d in run_detector(model_dir, share, **detect_kwargs)]
    parts = all_gather_json(ranks, mine)
    if not ranks.is_main:
        return None
    by_id = {d["image_id"]: d for part in parts for d in part}
    return [Detections(i, np.array(by_id[i]["boxes"], dtype=np.float64).reshape(-1, 4),
                       np.array(by_id[i]["scores"], dtype=np.float64),
                       np.array(by_id[i]["labels"], dtype=np.int64)) for i in dataset.ids]


def load_or_run_detections(
    dataset: Any,
    split_name: str,
    detections_dir: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    ranks: Ranks | None = None,
    **detect_kwargs: Any,
) -> dict[str, ClassDetections] | None:
    """Per-class detections of ``dataset``: read from the devkit result files in
    ``detections_dir``, or produced by the model in ``model_dir`` (and then written as
    result files into ``out_dir`` when given). Exactly one source must be given.

    In a sharded run (``ranks``, see :mod:`sppdet.distributed`) each rank detects in its
    share of the images and rank 0 gathers everything, in the data set's image order (so
    the result is the one-process result); the other ranks get None."""
    if (detections_dir is None) == (model_dir is None):
        raise SppdetError("give exactly one of --detections DIR (result files) or --model DIR")
    if detections_dir is not None:
        return read_result_files(detections_dir, split_name, dataset.classes)
    if ranks is not None and ranks.sharded:
        per_image = run_detector_sharded(model_dir, dataset, ranks, **detect_kwargs)
        if per_image is None:
            return None
    else:
        per_image = run_detector(model_dir, dataset, **detect_kwargs)
    dets = group_by_class(per_image, dataset.classes)
    if out_dir is not None:
        write_result_files(out_dir, split_name, dets, dataset.classes)
    return dets


def restrict_to_images(
    dets_by_class: dict[str, ClassDetections], image_ids: Iterable[str]
) -> tuple[dict[str, ClassDetections], int]:
    """Keep only detections on ``image_ids`` (for evaluating the first N images of a split
    with result files of the whole split); return them and how many were dropped."""
    keep_ids = np.array(sorted(set(image_ids)), dtype=str)
    out, dropped = {}, 0
    for name, d in dets_by_class.items():
        keep = np.isin(d.image_ids, keep_ids)
        dropped += int((~keep).sum())
        out[name] = ClassDetections(d.image_ids[keep], d.scores[keep], d.boxes[keep])
    return out, dropped


def load_annotations(dataset: Any, progress: bool = True) -> list[AnnotationLike]:
    """Ground truth of every image of ``dataset`` (a tqdm bar while the XML is parsed)."""
    return [dataset.annotation(i) for i in tqdm(dataset.ids, desc="ground truth", unit="img",
                                                 disable=not progress, leave=False)]


@dataclass(frozen=True)
class EvalReport:
    """The VOC result, the COCO metrics (None when skipped), the F1-optimal score
    thresholds (per class and pooled; see ``thresholds.py``), and the printable table."""

    voc: EvalResult
    coco: dict[str, Any] | None
    operating_points: dict[str, OperatingPoint | None] | None = None
    pooled_operating_point: OperatingPoint | None = None
    images: int = 0  # images evaluated
    ignored_detections: int = 0  # detections on images outside the data set's (limited) ids
    detections: dict[str, ClassDetections] | None = dataclasses.field(default=None, repr=False,
                                                                      compare=False)

    @property
    def table(self) -> str:
        return format_table(self.voc, self.coco)

    def to_json(self) -> dict[str, Any]:
        out = result_to_json(self.voc, self.coco)
        if self.operating_points is not None:
            out["f1_operating_points"] = {c: (op.to_json() if op else None)
                                          for c, op in self.operating_points.items()}
            pooled = self.pooled_operating_point
            out["f1_operating_point_pooled"] = pooled.to_json() if pooled else None
        return out


def evaluate_split(
    dets_by_class: dict[str, ClassDetections],
    annotations: Sequence[AnnotationLike],
    class_names: Sequence[str],
    with_coco: bool = True,
    coco_dataset: Any = None,
) -> EvalReport:
    """VOC 2007 (11-point and area) metrics, COCO metrics unless ``with_coco`` is off, and
    the F1-optimal score thresholds. With ``coco_dataset`` (a ``COCODataset``), the COCO
    metrics are computed against its own ground truth (its areas and crowd regions)."""
    voc = evaluate_detections(dets_by_class, annotations, class_names)
    coco = None
    if with_coco:
        coco = (coco_evaluate(dets_by_class, annotations, class_names) if coco_dataset is None
                else coco_evaluate_dataset(dets_by_class, coco_dataset))
    return EvalReport(voc, coco, f1_thresholds(dets_by_class, voc),
                      pooled_f1_operating_point(dets_by_class, voc), detections=dets_by_class)


def write_report(
    report: EvalReport,
    split_name: str,
    out_dir: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    dataset: Any = None,
) -> list[Path]:
    """Write the JSON (``json_path``) and, into ``out_dir``, the table
    (``eval_<split>.txt``) and the precision-recall plot (``pr_curves_<split>.png``); for a
    COCO data set (``dataset``) also the detections as ``coco_results_<split>.json``."""
    written = []
    if json_path is not None:
        save_json(json_path, report.to_json())
        written.append(Path(json_path))
    if out_dir is not None:
        table_path = Path(out_dir) / f"eval_{split_name}.txt"
        with atomic_path(table_path) as tmp:
            tmp.write_text(report.table + "\n")
        written.append(table_path)
        written.append(plot_pr_curves(report.voc, Path(out_dir) / f"pr_curves_{split_name}.png"))
    if out_dir is not None and _is_coco(dataset) and report.detections is not None:
        from sppdet.data.coco import coco_results

        results_path = Path(out_dir) / f"coco_results_{split_name}.json"
        with atomic_path(results_path) as tmp:
            tmp.write_text(json.dumps(coco_results(report.detections, dataset)) + "\n")
        written.append(results_path)
    return written


def _is_coco(dataset: Any) -> bool:
    from sppdet.data import COCODataset

    return isinstance(dataset, COCODataset)


def evaluate(
    dataset: Any,
    *,
    model_dir: str | os.PathLike | None = None,
    detections_dir: str | os.PathLike | None = None,
    proposals_dir: str | os.PathLike | None = None,
    features_dir: str | os.PathLike | None = None,
    device: str | None = None,
    bbox_reg: bool = BBOX_REG,
    out_dir: str | os.PathLike | None = None,
    coco_metrics: bool = COCO_METRICS,
    progress: bool = True,
    preset: str | None = None,
    workers: int = PROPOSAL_WORKERS,
    ranks: Ranks | None = None,
    weights: str | os.PathLike | None = None,
    max_proposals: int | None = None,
    overlap: bool | None = None,
    precision: str | None = None,
) -> EvalReport | None:
    """Evaluate a model (or existing devkit result files) on a data set, the VOC 2007 devkit
    way (11-point AP, IoU >= 0.5, difficult objects ignored), with the area AP, COCO
    AP@[0.5:0.95] and the F1-optimal score thresholds beside it (what `sppdet eval` runs).

    Args:
        dataset: a :class:`sppdet.data.VOCDataset` or :class:`sppdet.data.COCODataset`.
        model_dir: a model directory to run over ``dataset`` (give this or ``detections_dir``).
        detections_dir: a folder of result files ``comp4_det_<split>_<class>.txt``.
        proposals_dir, features_dir: with ``model_dir``, caches to reuse (else proposals and
            conv maps are computed from the images).
        device: with ``model_dir``, the torch device (default: cuda when available).
        bbox_reg: with ``model_dir``, apply the model's box regression.
        out_dir: with ``model_dir``, write the detections as devkit result files here.
        coco_metrics: also compute the COCO metrics (pycocotools; for a COCO data set
            against the file's own ground truth: areas, crowd regions).
        progress: show progress bars.
        preset: with ``model_dir``, test-time settings (``sppdet.presets``: "model", "fast").
        workers: with ``model_dir``, compute proposals in this many worker processes ahead
            of the conv passes (0: in this process; same detections either way).
        ranks: in a sharded run (:mod:`sppdet.distributed`), each rank detects in its share
            of the images and rank 0 evaluates everything; the other ranks get None.
        weights: with ``model_dir``, the backbone weights file of a model trained on
            ``sppdet extract --weights FILE`` features (checked against its recorded sha256).
        max_proposals: with ``model_dir``, score only each image's first that many proposals
            (in the proposal method's ranking).
        overlap: with ``model_dir``, proposals in a second thread beside the conv passes
            (None: when torch leaves a core free; see ``Detector.overlaps``).
        precision: with ``model_dir``, "float32" or "bfloat16" for the layers after the conv
            (default: the preset's; bfloat16 only where native, see ``sppdet.Detector``).

    Returns:
        :class:`EvalReport`: ``.voc.mAP`` (VOC07 11-point mAP, a fraction), ``.table`` (printable),
        ``.to_json()``; ``write_report(report, split, out_dir, json_path, dataset)`` writes
        it to files.

    Example:
        >>> report = sppdet.evaluate(VOCDataset(root, split="val"), model_dir="models/pool")  # doctest: +SKIP
        >>> print(report.table)                                                             # doctest: +SKIP
    """
    split_name = dataset.split or "ids"
    detect_kwargs: dict[str, Any] = {}
    if model_dir is not None:
        detect_kwargs = {"proposals_dir": proposals_dir, "features_dir": features_dir, "device": device,
                         "bbox_reg": bbox_reg, "progress": progress, "preset": preset,
                         "workers": workers, "weights": weights, "max_proposals": max_proposals,
                         "overlap": overlap, "precision": precision}
    elif (proposals_dir or features_dir or device or preset or workers or weights or max_proposals
          or precision):
        raise ArgumentError("proposals_dir, features_dir, device, preset, workers, weights, "
                            "max_proposals and precision (--proposals, --features, --device, --preset, "
                            "--workers, --weights, --max-proposals, --precision) "
                            "only apply with a model (--model)")
    dets = load_or_run_detections(dataset, split_name, detections_dir=detections_dir,
                                  model_dir=model_dir, out_dir=out_dir, ranks=ranks, **detect_kwargs)
    if dets is None:
        return None  # not rank 0 of a sharded run
    ignored = 0
    if dataset.limit is not None and detections_dir is not None:
        dets, ignored = restrict_to_images(dets, dataset.ids)
    annotations = load_annotations(dataset, progress)
    report = evaluate_split(dets, annotations, dataset.classes, with_coco=coco_metrics,
                            coco_dataset=dataset if _is_coco(dataset) else None)
    return dataclasses.replace(report, images=len(annotations), ignored_detections=ignored)


def save_display_thresholds(report: EvalReport, dataset: Any, model_dir: str | os.PathLike,
                            into: str | os.PathLike | None = None) -> tuple[Path, dict[str, Any]]:
    """Store each class's F1-optimal score threshold of ``report`` (an evaluation of
    ``model_dir`` on ``dataset``, a validation split, never a test set) in the model's
    config.json, or in model directory ``into`` (e.g. the same recipe retrained on all the
    data), for `sppdet detect` and ``sppdet.Detector.load``.

    Returns:
        The config file written and the ``test`` entries stored in it.
    """
    from sppdet.evaluation.thresholds import display_thresholds_config
    from sppdet.heads.model_dir import read_config, update_test_settings

    target = into if into is not None else model_dir
    if list(read_config(target).get("classes", dataset.classes)) != list(dataset.classes):
        raise ConfigMismatchError(f"{target}: its classes differ from the evaluated data set's")
    entry = display_thresholds_config(report.operating_points or {}, report.pooled_operating_point,
                                      f"{dataset.name} ({report.images} images)"
                                      + (f" with {model_dir}" if into is not None else ""))
    return update_test_settings(target, entry), entry

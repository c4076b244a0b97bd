"""Evaluation of a whole split: get the detections (result files or a model), score them,
write the outputs. The CLI's ``sppdet eval`` is a thin layer over these functions."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sppdet.detections import ClassDetections, Detections, group_by_class
from sppdet.errors import SppdetError
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


def load_or_run_detections(
    dataset: Any,
    split_name: str,
    detections_dir: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    **detect_kwargs: Any,
) -> dict[str, ClassDetections]:
    """Per-class detections of ``dataset``: read from the devkit result files in
    ``detections_dir``, or produced by the model in ``model_dir`` (and then written as
    result files into ``out_dir`` when given). Exactly one source must be given."""
    if (detections_dir is None) == (model_dir is None):
        raise SppdetError("give exactly one of --detections DIR (result files) or --model DIR")
    if detections_dir is not None:
        return read_result_files(detections_dir, split_name, dataset.classes)
    dets = group_by_class(run_detector(model_dir, dataset, **detect_kwargs), dataset.classes)
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
                      pooled_f1_operating_point(dets_by_class, voc))


def write_report(
    report: EvalReport,
    split_name: str,
    out_dir: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
) -> list[Path]:
    """Write the JSON (``json_path``) and, into ``out_dir``, the table
    (``eval_<split>.txt``) and the precision-recall plot (``pr_curves_<split>.png``)."""
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
    return written

"""Evaluation: VOC 2007 devkit metrics (:mod:`.voc`), devkit result files
(:mod:`.result_files`), COCO metrics through pycocotools (:mod:`.coco`), precision-recall
plots (:mod:`.plots`), the table and JSON (:mod:`.report`), and the whole-split flow behind
``sppdet eval`` (:mod:`.pipeline`). See docs/evaluation.md for the rules and choices."""

from sppdet.evaluation.coco import coco_evaluate
from sppdet.evaluation.plots import plot_pr_curves
from sppdet.evaluation.report import format_table, result_to_json
from sppdet.evaluation.result_files import read_result_files, result_file_name, write_result_files
from sppdet.evaluation.voc import (VOC07_RECALL_THRESHOLDS, ClassEval, EvalResult, evaluate_class,
                                   evaluate_detections, voc_ap)

__all__ = [
    "VOC07_RECALL_THRESHOLDS", "ClassEval", "EvalResult", "coco_evaluate", "evaluate_class",
    "evaluate_detections", "format_table", "plot_pr_curves", "read_result_files",
    "result_file_name", "result_to_json", "voc_ap", "write_result_files",
]

"""The evaluation's outputs for people (a per-class table) and for programs (a JSON dict)."""

from __future__ import annotations

import math
from typing import Any

from sppdet.evaluation.voc import EvalResult


def _pct(x: float) -> str:
    return "   n/a" if math.isnan(x) else f"{100 * x:6.1f}"


def _json_number(x: Any) -> Any:
    """NaN (undefined AP) becomes null, since JSON has no NaN."""
    if isinstance(x, dict):
        return {k: _json_number(v) for k, v in x.items()}
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def format_table(result: EvalResult, coco: dict[str, Any] | None = None) -> str:
    """Per-class table (APs in percent): VOC07 11-point AP, area AP, COCO AP@[.5:.95] when
    given, ground-truth and detection counts; means in the last row."""
    name_w = max([5, *map(len, result.class_names)])
    head = f"{'class':<{name_w}}  {'AP07':>6}  {'AParea':>6}"
    if coco is not None:
        head += f"  {'COCO':>6}"
    head += f"  {'#gt':>6}  {'#det':>7}"
    lines = [head, "-" * len(head)]
    for name in result.class_names:
        ev = result.per_class[name]
        row = f"{name:<{name_w}}  {_pct(ev.ap07)}  {_pct(ev.ap_area)}"
        if coco is not None:
            row += f"  {_pct(coco['AP_per_class'][name])}"
        lines.append(row + f"  {ev.npos:>6}  {ev.ndet:>7}")
    lines.append("-" * len(head))
    row = f"{'mAP':<{name_w}}  {_pct(result.mAP)}  {_pct(result.mAP_area)}"
    if coco is not None:
        row += f"  {_pct(coco['AP'])}"
    lines.append(row)
    lines.append(
        f"AP07: VOC 2007 11-point interpolated AP (the devkit's); AParea: area under the curve "
        f"(VOC 2010+); IoU >= {result.iou_thresh:g}, difficult objects ignored."
    )
    if coco is not None:
        lines.append(f"COCO: AP@[0.5:0.95] by pycocotools (AP50 {_pct(coco['AP50']).strip()}, "
                     f"AP75 {_pct(coco['AP75']).strip()}; small {_pct(coco['AP_small']).strip()}, "
                     f"medium {_pct(coco['AP_medium']).strip()}, large {_pct(coco['AP_large']).strip()}).")
    return "\n".join(lines)


def result_to_json(result: EvalResult, coco: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"metric": "voc07_11pt", "mAP", "AP": {class: ...}, "mAP_area", "AP_area",
    "coco": {...}}`` with APs as fractions in [0, 1] (null where undefined)."""
    out: dict[str, Any] = {
        "metric": "voc07_11pt",
        "iou_thresh": result.iou_thresh,
        "mAP": result.mAP,
        "AP": result.ap07,
        "mAP_area": result.mAP_area,
        "AP_area": result.ap_area,
        "num_gt": {c: result.per_class[c].npos for c in result.class_names},
        "num_det": {c: result.per_class[c].ndet for c in result.class_names},
        "coco": coco,
    }
    return _json_number(out)

"""Draw detections on an image (OpenCV; BGR in, BGR out)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from sppdet.detections import Detections
from sppdet.errors import SppdetError
from sppdet.fileio import atomic_path


def class_color(index: int) -> tuple[int, int, int]:
    """A distinct, stable BGR colour per class index (golden-ratio hues)."""
    hue = int((index * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 220, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_detections(image_bgr: np.ndarray, dets: Detections, class_names: Sequence[str]) -> np.ndarray:
    """A copy of ``image_bgr`` with each box and its ``class score`` label drawn."""
    out = image_bgr.copy()
    thickness = max(2, round(min(out.shape[:2]) / 300))
    font_scale = max(0.45, min(out.shape[:2]) / 900)
    # Draw the weakest first so the strongest labels end on top.
    for k in np.argsort(dets.scores, kind="stable"):
        x1, y1, x2, y2 = (int(round(v)) for v in dets.boxes[k])
        label = int(dets.labels[k])
        color = class_color(label)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), color, thickness)
        text = f"{class_names[label]} {dets.scores[k]:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else y1 + th + 4
        cv2.rectangle(out, (x1, ty - th - 3), (x1 + tw + 4, ty + base - 1), color, -1)
        cv2.putText(out, text, (x1 + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return out


def write_annotated(path: str | Path, image_bgr: np.ndarray, dets: Detections,
                    class_names: Sequence[str]) -> Path:
    """Write ``image_bgr`` with its detections drawn (``draw_detections``) as an image file
    (atomically; the format follows the suffix, e.g. ``.jpg``); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp_image = tmp.with_suffix(path.suffix)
        if not cv2.imwrite(str(tmp_image), draw_detections(image_bgr, dets, class_names)):
            raise SppdetError(f"{path}: cannot write image")
        tmp_image.replace(tmp)
    return path

"""VOC devkit result files: ``comp4_det_<split>_<class>.txt``, one per class.

Each line is ``<image id> <score> <xmin> <ymin> <xmax> <ymax>`` with the box in VOC's
1-based inclusive coordinates (converted from and to internal boxes by
:mod:`sppdet.boxes`). Numbers are written as Python's shortest round-trip ``repr``, so the
VOC-space values read back are bit-identical and evaluating the files gives the same APs
as evaluating the detections in memory. Files are written atomically, lines in the order
given (which is what breaks score ties in the ranking).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sppdet.boxes import internal_to_voc, voc_to_internal
from sppdet.detections import ClassDetections
from sppdet.errors import ArgumentError, DataError
from sppdet.fileio import atomic_path

_LINE_FORMAT = "<image id> <score> <xmin> <ymin> <xmax> <ymax>"


def result_file_name(split: str, class_name: str) -> str:
    """The devkit's name for a class's results: ``comp4_det_<split>_<class>.txt``."""
    return f"comp4_det_{split}_{class_name}.txt"


def format_lines(dets: ClassDetections) -> str:
    """One class's detections as result-file text (VOC coordinates)."""
    voc = internal_to_voc(dets.boxes).tolist()
    scores = dets.scores.tolist()
    ids = dets.image_ids.tolist()
    for img in set(ids):
        if not img or any(c.isspace() for c in img):
            raise ArgumentError(f"image id {img!r} cannot be written to a result file (empty or "
                                "with white space)")
    return "".join(
        f"{img} {s!r} {b[0]!r} {b[1]!r} {b[2]!r} {b[3]!r}\n" for img, s, b in zip(ids, scores, voc)
    )


def write_result_files(
    out_dir: str | os.PathLike,
    split: str,
    dets_by_class: Mapping[str, ClassDetections],
    class_names: Sequence[str],
) -> list[Path]:
    """Write one result file per class of ``class_names`` into ``out_dir`` (an empty file
    for a class without detections); return the paths."""
    out_dir = Path(out_dir)
    paths = []
    for name in class_names:
        path = out_dir / result_file_name(split, name)
        text = format_lines(dets_by_class.get(name, ClassDetections.empty()))
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        paths.append(path)
    return paths


def parse_result_file(path: str | os.PathLike) -> ClassDetections:
    """Read one result file; a malformed line is a :class:`DataError` naming file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: result file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read result file ({e})") from None
    ids: list[str] = []
    values: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        bad = len(fields) != 6
        if not bad:
            try:
                row = [float(v) for v in fields[1:]]
            except ValueError:
                bad = True
            else:
                bad = not all(map(math.isfinite, row))
        if bad:
            raise DataError(f"{path}:{lineno}: expected '{_LINE_FORMAT}' with finite numbers, got {line!r}")
        ids.append(fields[0])
        values.append(row)
    if not ids:
        return ClassDetections.empty()
    arr = np.array(values, dtype=np.float64)
    return ClassDetections(np.array(ids, dtype=str), arr[:, 0], voc_to_internal(arr[:, 1:]))


def read_result_files(
    det_dir: str | os.PathLike, split: str, class_names: Sequence[str]
) -> dict[str, ClassDetections]:
    """Read the result file of every class of ``class_names`` from ``det_dir``.

    A missing file is an error (naming all missing files), since silently scoring a class
    0 would hide an incomplete run; write an empty file for a class without detections.
    """
    det_dir = Path(det_dir)
    if not det_dir.is_dir():
        raise DataError(f"{det_dir}: detections folder not found")
    missing = [result_file_name(split, c) for c in class_names if not (det_dir / result_file_name(split, c)).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{det_dir}: missing result files for split {split!r}: {shown}")
    return {c: parse_result_file(det_dir / result_file_name(split, c)) for c in class_names}

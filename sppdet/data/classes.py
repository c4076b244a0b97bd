"""Class lists: the 20 PASCAL VOC classes and user class files."""

from __future__ import annotations

from pathlib import Path

from sppdet.errors import DataError

# The devkit's order (VOCinit.m); class indices everywhere in sppdet follow a class list.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def read_class_file(path: str | Path) -> tuple[str, ...]:
    """Read one class name per line; blank lines and ``#`` comments are ignored."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read class list ({e.strerror or e})") from None
    names = [ln.split("#", 1)[0].strip() for ln in lines]
    names = [n for n in names if n]
    if not names:
        raise DataError(f"{path}: class list is empty")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{path}: class list repeats {', '.join(dupes)}")
    return tuple(names)

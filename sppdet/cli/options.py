"""Options shared by every command that reads a VOC-format data set."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import click

from sppdet.data import VOC_CLASSES, VOCDataset, read_class_file, read_id_list


def dataset_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --voc, --year, --split, --ids, --limit, --classes; pass ``dataset=VOCDataset``."""

    @click.option("--voc", "voc_root", required=True, type=click.Path(path_type=Path),
                  help="VOC-format data set: a year folder (VOCdevkit/VOC2007) or VOCdevkit with --year.")
    @click.option("--year", default=None, help="Year folder inside VOCdevkit (e.g. 2007).")
    @click.option("--split", default="train", show_default=True,
                  help="Split list ImageSets/Main/<split>.txt.")
    @click.option("--ids", "ids_file", type=click.Path(path_type=Path), default=None,
                  help="File of image ids, one per line (overrides --split).")
    @click.option("--limit", type=click.IntRange(min=1), default=None,
                  help="Use only the first N ids.")
    @click.option("--classes", "classes_file", type=click.Path(path_type=Path), default=None,
                  help="Class list, one name per line (default: the 20 VOC classes).")
    @functools.wraps(func)
    def wrapper(*args: Any, voc_root: Path, year: str | None, split: str,
                ids_file: Path | None, limit: int | None, classes_file: Path | None,
                **kwargs: Any) -> Any:
        classes = read_class_file(classes_file) if classes_file else VOC_CLASSES
        ids = read_id_list(ids_file) if ids_file else None
        dataset = VOCDataset(voc_root, split=None if ids else split, ids=ids, limit=limit,
                             classes=classes, year=year)
        return func(*args, dataset=dataset, **kwargs)

    return wrapper


def device_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --device (cpu, cuda, cuda:N; default cuda when available)."""
    return click.option("--device", default=None,
                        help="Torch device: cpu, cuda or cuda:N (default: cuda if available, else cpu).")(func)


def cache_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --features DIR and --proposals DIR (the caches the training stages read)."""
    func = click.option("--proposals", "proposals_dir", required=True, type=click.Path(path_type=Path),
                        help="Proposal cache (the one the feature cache was extracted for).")(func)
    return click.option("--features", "features_dir", required=True, type=click.Path(path_type=Path),
                        help="Conv-feature cache (sppdet extract).")(func)

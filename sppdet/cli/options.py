"""Options shared by every command that reads a data set (VOC or COCO format)."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable

import click

from sppdet.data import VOC_CLASSES, COCODataset, VOCDataset, read_class_file, read_id_list


def dataset_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the data set options and pass ``dataset=`` a ``VOCDataset`` or a ``COCODataset``.

    Exactly one of ``--voc ROOT`` (with --year, --split, --classes) or ``--coco FILE
    --images DIR``; --ids and --limit apply to both.
    """

    @click.option("--voc", "voc_root", default=None, type=click.Path(path_type=Path),
                  help="VOC-format data set: a year folder (VOCdevkit/VOC2007) or VOCdevkit with --year.")
    @click.option("--coco", "coco_file", default=None, type=click.Path(path_type=Path),
                  help="COCO-format data set: the annotation JSON (with --images DIR).")
    @click.option("--images", "images_dir", default=None, type=click.Path(path_type=Path),
                  help="With --coco: the folder the images' file_name entries are relative to.")
    @click.option("--year", default=None, help="Year folder inside VOCdevkit (e.g. 2007).")
    @click.option("--split", default="train", show_default=True,
                  help="Split list ImageSets/Main/<split>.txt (--voc only).")
    @click.option("--ids", "ids_file", type=click.Path(path_type=Path), default=None,
                  help="File of image ids, one per line (overrides --split; COCO: integer image ids).")
    @click.option("--limit", type=click.IntRange(min=1), default=None,
                  help="Use only the first N ids.")
    @click.option("--classes", "classes_file", type=click.Path(path_type=Path), default=None,
                  help="Class list, one name per line (default: the 20 VOC classes; --voc only: "
                       "a COCO file's categories are its classes).")
    @functools.wraps(func)
    def wrapper(*args: Any, voc_root: Path | None, coco_file: Path | None, images_dir: Path | None,
                year: str | None, split: str, ids_file: Path | None, limit: int | None,
                classes_file: Path | None, **kwargs: Any) -> Any:
        ids = read_id_list(ids_file) if ids_file else None
        if (voc_root is None) == (coco_file is None):
            raise click.UsageError("give exactly one data set: --voc ROOT or --coco FILE --images DIR")
        if coco_file is not None:
            ctx = click.get_current_context()
            given = [f"--{name}" for name in ("year", "split", "classes")
                     if ctx.get_parameter_source(name if name != "classes" else "classes_file")
                     == click.core.ParameterSource.COMMANDLINE]
            if given:
                raise click.UsageError(f"{', '.join(given)} apply to --voc only (a COCO file's "
                                       f"categories are its classes; choose images with --ids)")
            if images_dir is None:
                raise click.UsageError("--coco needs --images DIR (the folder of the image files)")
            dataset: Any = COCODataset(coco_file, images_dir, ids=ids, limit=limit)
            return func(*args, dataset=dataset, **kwargs)
        if images_dir is not None:
            raise click.UsageError("--images applies to --coco only (a VOC folder has JPEGImages/)")
        classes = read_class_file(classes_file) if classes_file else VOC_CLASSES
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


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls``: options read their defaults from
    the parameter dataclasses, so that each default is written once."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            break
    raise AttributeError(f"{cls.__name__} has no field {name!r} with a default")


def speed_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --preset NAME (sppdet.presets), --workers N (proposal worker processes),
    --overlap/--serial (proposals in a thread beside the conv pass) and --precision."""
    from sppdet.defaults import OVERLAP_PROPOSALS
    from sppdet.device import PRECISIONS
    from sppdet.presets import DEFAULT_PRESET, PRESETS

    func = click.option("--overlap/--serial", "overlap", default=OVERLAP_PROPOSALS, show_default=True,
                        help="--overlap: compute each image's proposals in a second thread beside "
                             "its conv pass (torch gets one core fewer; same detections as a serial "
                             "run on as many torch threads), or in worker processes (--workers). "
                             "--serial: one after the other (workers only if --workers N).")(func)

    func = click.option("--workers", type=click.IntRange(min=0), default=None, show_default="auto",
                        help="Compute proposals in N worker processes ahead of the conv passes "
                             "(same results); 0: in this process (see --overlap). Default: when "
                             "proposals are computed for several images on 2 or more cores, "
                             "cores - cores // 4 workers (2 on 2 cores), torch on the other "
                             "cores (at least one); else 0.")(func)
    func = click.option("--precision", type=click.Choice(PRECISIONS), default=None, show_default="the preset's",
                        help="Precision of pooling, the fc layers, classifiers and box deltas: "
                             "bfloat16 makes the fc layers about 3x faster on CPUs with AMX (used "
                             "only where native; elsewhere float32). --preset model: float32, "
                             "fast: bfloat16.")(func)
    choices = "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())
    return click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True,
                        help=f"Test-time speed/accuracy settings ({choices}). See README, Speed.")(func)


def proposal_workers(workers: int | None, images: int, overlap: bool) -> int:
    """``--workers``: the number given, or by default (None) ``auto_proposal_workers`` for
    ``images`` images that need proposals (none with ``--serial``)."""
    from sppdet.defaults import auto_proposal_workers
    from sppdet.perf import usable_cores

    if workers is not None:
        return workers
    return auto_proposal_workers(usable_cores(), images) if overlap else 0


def share_cores(workers: int) -> None:
    """Leave ``workers`` cores to the proposal workers: torch gets the other cores (at least
    one). Intra-op threads that share a core with a busy worker wait at every barrier."""
    import torch

    from sppdet.perf import usable_cores

    free = max(1, usable_cores() - workers)
    if torch.get_num_threads() > free:
        torch.set_num_threads(free)

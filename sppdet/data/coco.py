"""COCO-format data sets: one annotation JSON plus a folder of images, read through pycocotools.

This is, beside ``voc.py``, the other place where file coordinates become internal boxes.
A COCO box ``[x, y, w, h]`` (continuous pixels, (x, y) the top-left corner) becomes the
internal ``(x, y, x + w, y + h)``; :func:`internal_to_coco` maps back (tested round trip).

How COCO maps onto what the pipeline expects (the interface of ``VOCDataset``):

- **Ids** are the COCO image ids as strings (``"397133"``), sorted numerically; they name
  the cache files. ``--ids FILE`` lists such ids; ``--limit N`` keeps the first N.
- **Classes** are the categories in id order, names kept (so class k is the k-th smallest
  category id); two categories with one name are an error.
- ``iscrowd`` objects are treated as VOC treats difficult ones: kept as ground truth,
  ignored by the evaluation, used as positives by training.
- **The box rule** is VOC's: a box reaching outside the image is clipped to it (warning); a
  box with a non-positive width or height, before or after clipping, is dropped (warning).
  Both are recorded in ``box_issues`` (the box as written in the file, ``[x, y, w, h]``).
- Bad input is a ``DataError`` naming the file and the reason: malformed JSON, a missing
  ``images`` / ``annotations`` / ``categories`` list, an annotation naming an unknown image
  or category id, a box that is not four finite numbers, an image file name that leaves
  the image folder; a missing image file is reported when the image is read.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

import numpy as np

from sppdet.data.voc import Annotation, BoxIssue, read_image
from sppdet.errors import DataError

log = logging.getLogger(__name__)


def coco_to_internal(boxes: np.ndarray) -> np.ndarray:
    """COCO ``[x, y, w, h]`` -> internal ``(x1, y1, x2, y2)`` = ``(x, y, x + w, y + h)``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)


def internal_to_coco(boxes: np.ndarray) -> np.ndarray:
    """Internal ``(x1, y1, x2, y2)`` -> COCO ``[x, y, w, h]`` = ``(x1, y1, x2 - x1, y2 - y1)``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def load_coco_json(path: str | Path) -> dict[str, Any]:
    """Read and validate a COCO annotation file; ``DataError`` naming the file otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: COCO annotation file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder; --coco takes the annotation JSON file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 JSON file ({e.reason})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a COCO annotation file (the top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            what = "missing" if key not in data else "not a list"
            raise DataError(f"{path}: not a COCO annotation file ('{key}' is {what})")

    cat_ids: set[int] = set()
    names: dict[str, int] = {}
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str) \
                or not cat["name"].strip():
            raise DataError(f"{path}: categories[{k}] needs an integer 'id' and a non-empty 'name'")
        if cat["id"] in cat_ids:
            raise DataError(f"{path}: category id {cat['id']} appears twice")
        if cat["name"] in names:
            raise DataError(f"{path}: categories {names[cat['name']]} and {cat['id']} are both "
                            f"named {cat['name']!r} (class names must differ)")
        cat_ids.add(cat["id"])
        names[cat["name"]] = cat["id"]
    if not cat_ids:
        raise DataError(f"{path}: no categories")

    image_ids: set[int] = set()
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")) or not isinstance(img.get("file_name"), str):
            raise DataError(f"{path}: images[{k}] needs an integer 'id' and a 'file_name'")
        if img["id"] in image_ids:
            raise DataError(f"{path}: image id {img['id']} appears twice")
        name = PurePosixPath(img["file_name"].replace("\\", "/"))
        if not img["file_name"] or name.is_absolute() or ".." in name.parts:
            raise DataError(f"{path}: image {img['id']}: file_name {img['file_name']!r} must be a "
                            f"relative path inside the image folder")
        image_ids.add(img["id"])

    for k, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{k}]" + (f" (id {ann.get('id')})" if isinstance(ann, dict) else "")
        if not isinstance(ann, dict):
            raise DataError(f"{where}: not an object")
        if ann.get("image_id") not in image_ids:
            raise DataError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") not in cat_ids:
            raise DataError(f"{where}: unknown category id {ann.get('category_id')!r} "
                            f"(categories: {', '.join(map(str, sorted(cat_ids)[:10]))}"
                            f"{', ...' if len(cat_ids) > 10 else ''})")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_is_number, bbox)):
            raise DataError(f"{where}: bbox {bbox!r} is not four finite numbers [x, y, w, h]")
        if "id" not in ann:
            ann["id"] = k + 1  # pycocotools indexes annotations by id
    return data


def coco_index(data: dict[str, Any]) -> Any:
    """A ``pycocotools.coco.COCO`` over an already loaded data set (its prints captured)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    return coco


@dataclass
class COCODataset:
    """A COCO-format data set: ``annotation_file`` (instances JSON) and ``images_dir``
    (the folder the images' ``file_name`` entries are relative to).

    ``ids`` (an explicit list of image ids as strings) replaces "every image of the file";
    ``limit`` keeps the first N. ``split`` is only a name (the file's stem by default).
    """

    annotation_file: Path
    images_dir: Path
    ids: list[str] | None = None
    limit: int | None = None
    split: str | None = None
    box_issues: list[BoxIssue] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.annotation_file = Path(self.annotation_file)
        self.images_dir = Path(self.images_dir)
        if not self.images_dir.is_dir():
            raise DataError(f"{self.images_dir}: image folder does not exist (--images)")
        self.coco = coco_index(load_coco_json(self.annotation_file))
        cats = sorted(self.coco.cats.values(), key=lambda c: c["id"])
        self.category_ids: tuple[int, ...] = tuple(int(c["id"]) for c in cats)
        self.classes: tuple[str, ...] = tuple(str(c["name"]) for c in cats)
        self._label_of = {cid: k for k, cid in enumerate(self.category_ids)}
        every = [str(i) for i in sorted(self.coco.imgs)]
        if self.ids is None:
            self.ids = every
            if self.split is None:
                self.split = self.annotation_file.stem
        else:
            self.ids = [str(i).strip() for i in self.ids]
            known = set(every)
            unknown = [i for i in self.ids if i not in known]
            if unknown:
                raise DataError(f"{self.annotation_file}: {len(unknown)} listed ids are not image ids "
                                f"of this file (first: {', '.join(unknown[:3])}); COCO ids are the "
                                f"integer 'id' of each entry in 'images'")
        if self.limit is not None:
            if self.limit < 1:
                raise DataError(f"--limit must be at least 1 (got {self.limit})")
            self.ids = self.ids[: self.limit]
        self._cache: dict[str, Annotation] = {}

    @property
    def root(self) -> Path:
        """Where the data set is described (the annotation file)."""
        return self.annotation_file

    @property
    def name(self) -> str:
        return f"{self.annotation_file.stem}:{self.split or 'ids'}"

    def __len__(self) -> int:
        return len(self.ids)

    def coco_image_id(self, image_id: str) -> int:
        """The integer COCO id of an internal image id."""
        return int(image_id)

    def _image_entry(self, image_id: str) -> dict[str, Any]:
        try:
            return self.coco.imgs[int(image_id)]
        except (KeyError, ValueError):
            raise DataError(f"{self.annotation_file}: no image with id {image_id!r}") from None

    def image_path(self, image_id: str) -> Path:
        return self.images_dir / self._image_entry(image_id)["file_name"]

    def load_image(self, image_id: str) -> np.ndarray:
        """The image as an HxWx3 uint8 BGR array; DataError if missing, unreadable, damaged
        or of another size than the file's width and height for it."""
        return read_image(self.image_path(image_id), self.annotated_size(image_id))

    def annotated_size(self, image_id: str) -> tuple[int, int] | None:
        """(width, height) of ``image_id`` from the annotation file, if it has usable ones."""
        entry = self._image_entry(image_id)
        w, h = entry.get("width"), entry.get("height")
        return (int(w), int(h)) if _is_number(w) and _is_number(h) and w > 0 and h > 0 else None

    def _size(self, image_id: str) -> tuple[int, int]:
        entry = self._image_entry(image_id)
        w, h = entry.get("width"), entry.get("height")
        if _is_number(w) and _is_number(h) and w > 0 and h > 0:
            return int(w), int(h)
        image = self.load_image(image_id)  # no usable size in the file: read it from the image
        return image.shape[1], image.shape[0]

    def annotation(self, image_id: str) -> Annotation:
        """Ground truth of ``image_id`` in the internal convention (cached)."""
        ann = self._cache.get(image_id)
        if ann is not None:
            return ann
        width, height = self._size(image_id)
        boxes, labels, crowd = [], [], []
        issues: list[BoxIssue] = []
        for obj in self.coco.imgToAnns.get(int(image_id), []):
            name = self.classes[self._label_of[obj["category_id"]]]
            x, y, w, h = (float(v) for v in obj["bbox"])
            if w <= 0 or h <= 0:
                issues.append(BoxIssue(image_id, name, (x, y, w, h), "dropped",
                                       "non-positive width or height ([x, y, w, h])"))
                continue
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, float(width)), min(y + h, float(height))
            if x2 <= x1 or y2 <= y1:
                issues.append(BoxIssue(image_id, name, (x, y, w, h), "dropped",
                                       f"nothing left inside the {width}x{height} image"))
                continue
            if (x1, y1, x2, y2) != (x, y, x + w, y + h):
                issues.append(BoxIssue(image_id, name, (x, y, w, h), "clipped",
                                       f"outside the {width}x{height} image ([x, y, w, h])"))
            boxes.append((x1, y1, x2, y2))
            labels.append(self._label_of[obj["category_id"]])
            crowd.append(bool(obj.get("iscrowd", 0)))
        for issue in issues:
            log.warning("%s: image %s: %s box %s %s: %s", self.annotation_file, image_id,
                        issue.class_name, list(issue.voc_box), issue.action, issue.reason)
        self.box_issues.extend(issues)
        ann = Annotation(
            image_id=image_id, width=width, height=height,
            boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
            labels=np.array(labels, dtype=np.int64),
            difficult=np.array(crowd, dtype=bool),
            truncated=np.zeros(len(labels), dtype=bool),
        )
        self._cache[image_id] = ann
        return ann

    def annotations(self) -> Iterable[Annotation]:
        for image_id in self.ids:
            yield self.annotation(image_id)


def dataset_to_coco(dataset: Any, images_dir: str | Path | None = None) -> dict[str, Any]:
    """Any data set of the pipeline (VOC or COCO) as a COCO annotation dict.

    Images get ids 1, 2, ... in the data set's id order (``"sppdet_id"`` keeps the original
    id) and ``file_name`` relative to ``images_dir`` (default: the folder of the first
    image); class k becomes category k + 1; difficult objects become ``iscrowd`` 1 with
    ``area`` = w * h, so pycocotools evaluates the file as sppdet's in-memory COCO metrics
    do. Boxes are the internal ones after the data set's box rule (clipped, dropped).
    """
    ids = list(dataset.ids)
    paths = [Path(dataset.image_path(i)) for i in ids]
    base = Path(images_dir) if images_dir is not None else (paths[0].parent if paths else Path("."))
    images, anns = [], []
    for k, (image_id, path) in enumerate(zip(ids, paths), start=1):
        try:
            rel = path.relative_to(base).as_posix()
        except ValueError:
            raise DataError(f"{path}: not inside the image folder {base}") from None
        a = dataset.annotation(image_id)
        images.append({"id": k, "file_name": rel, "width": int(a.width), "height": int(a.height),
                       "sppdet_id": str(image_id)})
        for box, label, crowd in zip(internal_to_coco(a.boxes).tolist(), a.labels.tolist(),
                                     a.difficult.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": int(label) + 1,
                         "bbox": box, "area": box[2] * box[3], "iscrowd": int(crowd)})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(dataset.classes)]
    return {"info": {"description": f"written by sppdet from {dataset.name}"},
            "images": images, "annotations": anns, "categories": categories}


def coco_results(dets_by_class: Any, dataset: COCODataset) -> list[dict[str, Any]]:
    """Detections as a COCO results list (``image_id``, ``category_id``, ``bbox``, ``score``),
    in the data set's image and category ids, class by class in the order given."""
    out: list[dict[str, Any]] = []
    for k, name in enumerate(dataset.classes):
        d = dets_by_class.get(name)
        if d is None or len(d.scores) == 0:
            continue
        cat = dataset.category_ids[k]
        for img, score, box in zip(d.image_ids.tolist(), d.scores.tolist(),
                                   internal_to_coco(d.boxes).tolist()):
            out.append({"image_id": dataset.coco_image_id(img), "category_id": cat,
                        "bbox": box, "score": score})
    return out


__all__: Sequence[str] = ("COCODataset", "coco_to_internal", "internal_to_coco", "load_coco_json",
                          "dataset_to_coco", "coco_results", "coco_index")

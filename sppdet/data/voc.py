"""VOCdevkit-style data sets: split lists, XML annotations and images.

This is the one place where file coordinates become internal boxes (see sppdet.boxes).

Box rule for real-world files (documented in the README): a box that reaches outside the
image is clipped to it, with a warning; a box that is degenerate (xmax <= xmin or
ymax <= ymin in VOC's 1-based inclusive pixels, after clipping: a single pixel line or an
inverted box) is dropped, with a warning. Both are recorded in ``VOCDataset.box_issues``.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from sppdet.boxes import voc_to_internal
from sppdet.data.classes import VOC_CLASSES
from sppdet.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


@dataclass(frozen=True)
class Annotation:
    """Ground truth of one image, boxes in the internal convention."""

    image_id: str
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float64 internal (x1, y1, x2, y2)
    labels: np.ndarray  # (N,) int64 indices into the class list
    difficult: np.ndarray  # (N,) bool
    truncated: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class BoxIssue:
    """A box the parser clipped or dropped, and why."""

    image_id: str
    class_name: str
    voc_box: tuple[float, float, float, float]
    action: str  # "clipped" or "dropped"
    reason: str


def resolve_root(root: str | Path, year: str | None = None) -> Path:
    """Accept a year folder (``VOCdevkit/VOC2007``) or ``VOCdevkit`` plus a year."""
    root = Path(root)
    if (root / "Annotations").is_dir():
        return root
    if year is not None and (root / f"VOC{year}" / "Annotations").is_dir():
        return root / f"VOC{year}"
    if year is None:
        years = sorted(p for p in root.glob("VOC*") if (p / "Annotations").is_dir())
        if len(years) == 1:
            return years[0]
        if len(years) > 1:
            names = ", ".join(p.name[3:] for p in years)
            raise DataError(f"{root}: holds several years ({names}); choose one with --year")
    if not root.exists():
        raise DataError(f"{root}: data set folder does not exist")
    hint = f" or VOC{year}/Annotations" if year else ""
    raise DataError(f"{root}: not a VOC-format data set (no Annotations/ folder{hint})")


def read_id_list(path: str | Path) -> list[str]:
    """Read image ids, one per line (extra columns, as in class split files, are ignored);
    DataError naming the file and line for text that is not UTF-8, a duplicate id, or an id
    that is not a plain file name (``check_image_ids``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read id list ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                        f"an id list has one image id per line") from None
    lines = [(n, ln.split()[0]) for n, ln in enumerate(text.splitlines(), 1)
             if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise DataError(f"{path}: id list is empty")
    check_image_ids([i for _, i in lines], str(path), [n for n, _ in lines])
    return [i for _, i in lines]


def check_image_ids(ids: Sequence[str], where: str, line_numbers: Sequence[int] | None = None) -> None:
    """Every id must be a plain file name (no path separators, no leading dot, no control
    characters: an id names files inside the data set and the caches) and appear once."""
    def at(k: int) -> str:
        return f"{where}: line {line_numbers[k]}" if line_numbers is not None else where

    seen: dict[str, int] = {}
    for k, image_id in enumerate(ids):
        if (not isinstance(image_id, str) or not image_id or image_id.startswith(".")
                or any(c in image_id for c in "/\\:") or any(ord(c) < 32 for c in image_id)):
            raise DataError(f"{at(k)}: invalid image id {image_id!r} (an id is a file name without "
                            f"its suffix: no folders, no leading dot)")
        if image_id in seen:
            first = (f"line {line_numbers[seen[image_id]]}" if line_numbers is not None
                     else f"position {seen[image_id] + 1}")
            raise DataError(f"{at(k)}: image id {image_id!r} is listed twice (first at {first})")
        seen[image_id] = k


def _text(node: ET.Element, tag: str) -> str | None:
    child = node.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _flag(node: ET.Element, tag: str, where: str) -> bool:
    value = _text(node, tag)
    if value is None or value == "":
        return False
    try:
        return bool(int(float(value)))
    except ValueError:
        raise DataError(f"{where}: <{tag}> is not 0 or 1 ({value!r})") from None


def parse_annotation_xml(
    xml_path: str | Path,
    image_id: str,
    classes: Sequence[str],
    image_size: tuple[int, int] | None = None,
) -> tuple[Annotation, list[BoxIssue], list[str]]:
    """Parse one VOC XML file.

    Returns the annotation, the boxes that were clipped or dropped, and the class names
    that are not in ``classes`` (the caller decides how to report them).
    ``image_size`` (width, height) is used when the XML has no usable <size>.
    """
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        raise DataError(f"{xml_path}: annotation file missing for image id {image_id!r}") from None
    except ET.ParseError as e:
        raise DataError(f"{xml_path}: malformed XML ({e})") from None
    except OSError as e:
        raise DataError(f"{xml_path}: cannot read annotation ({e.strerror or e})") from None

    width = height = 0
    size = root.find("size")
    if size is not None:
        try:
            width = int(float(_text(size, "width") or 0))
            height = int(float(_text(size, "height") or 0))
        except ValueError:
            raise DataError(f"{xml_path}: <size> has a non-numeric width or height") from None
    if width <= 0 or height <= 0:
        if image_size is None:
            raise DataError(f"{xml_path}: no usable <size> element (width and height)")
        width, height = image_size

    class_index = {name: i for i, name in enumerate(classes)}
    boxes, labels, difficult, truncated = [], [], [], []
    issues: list[BoxIssue] = []
    unknown: list[str] = []
    for k, obj in enumerate(root.findall("object")):
        where = f"{xml_path}: object {k + 1}"
        name = _text(obj, "name")
        if not name:
            raise DataError(f"{where}: missing <name>")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"{where} ({name}): missing <bndbox>")
        try:
            coords = [float(_text(bnd, t) or "nan") for t in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            raise DataError(f"{where} ({name}): <bndbox> coordinates are not numbers") from None
        if any(np.isnan(coords)):
            raise DataError(f"{where} ({name}): <bndbox> lacks xmin, ymin, xmax or ymax")
        if name not in class_index:
            unknown.append(name)
            continue
        xmin, ymin, xmax, ymax = coords
        cxmin, cymin = max(xmin, 1.0), max(ymin, 1.0)
        cxmax, cymax = min(xmax, float(width)), min(ymax, float(height))
        if cxmax <= cxmin or cymax <= cymin:
            issues.append(BoxIssue(image_id, name, tuple(coords), "dropped",
                                   "degenerate (xmax <= xmin or ymax <= ymin after clipping)"))
            continue
        if (cxmin, cymin, cxmax, cymax) != (xmin, ymin, xmax, ymax):
            issues.append(BoxIssue(image_id, name, tuple(coords), "clipped",
                                   f"outside the {width}x{height} image"))
        boxes.append((cxmin, cymin, cxmax, cymax))
        labels.append(class_index[name])
        difficult.append(_flag(obj, "difficult", where))
        truncated.append(_flag(obj, "truncated", where))

    ann = Annotation(
        image_id=image_id,
        width=width,
        height=height,
        boxes=voc_to_internal(np.array(boxes, dtype=np.float64).reshape(-1, 4)),
        labels=np.array(labels, dtype=np.int64),
        difficult=np.array(difficult, dtype=bool),
        truncated=np.array(truncated, dtype=bool),
    )
    return ann, issues, unknown


@dataclass
class VOCDataset:
    """A VOCdevkit-style data set: ``root/{Annotations,JPEGImages,ImageSets/Main}``.

    ``ids`` (an explicit list) takes precedence over ``split``; ``limit`` keeps the first N.
    """

    root: Path
    split: str | None = "train"
    ids: list[str] | None = None
    limit: int | None = None
    classes: tuple[str, ...] = VOC_CLASSES
    year: str | None = None
    box_issues: list[BoxIssue] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = resolve_root(self.root, self.year)
        self.classes = tuple(self.classes)
        if self.ids is None:
            if self.split is None:
                raise DataError("give a split (--split) or an id list (--ids)")
            split_file = self.root / "ImageSets" / "Main" / f"{self.split}.txt"
            if not split_file.is_file():
                have = sorted(p.stem for p in (self.root / "ImageSets" / "Main").glob("*.txt")
                              if "_" not in p.stem)
                raise DataError(f"{split_file}: split {self.split!r} not found"
                                + (f" (splits here: {', '.join(have)})" if have else ""))
            self.ids = read_id_list(split_file)
        else:
            self.ids = list(self.ids)
            check_image_ids(self.ids, f"{self.root}: ids")
        if self.limit is not None:
            if self.limit < 1:
                raise DataError(f"--limit must be at least 1 (got {self.limit})")
            self.ids = self.ids[: self.limit]
        self._cache: dict[str, Annotation] = {}
        self._issues_seen: set[str] = set()

    @property
    def name(self) -> str:
        return f"{self.root.name}:{self.split or 'ids'}"

    def __len__(self) -> int:
        return len(self.ids)

    def annotation_path(self, image_id: str) -> Path:
        return self.root / "Annotations" / f"{image_id}.xml"

    def image_path(self, image_id: str) -> Path:
        """The image file of ``image_id`` (``JPEGImages/<id>.jpg`` or another suffix)."""
        folder = self.root / "JPEGImages"
        path = folder / f"{image_id}.jpg"
        if path.is_file():
            return path
        for suffix in IMAGE_SUFFIXES:
            if (folder / f"{image_id}{suffix}").is_file():
                return folder / f"{image_id}{suffix}"
        return path  # missing: load_image reports it

    def load_image(self, image_id: str) -> np.ndarray:
        """The image as an HxWx3 uint8 BGR array; DataError if missing, unreadable, damaged
        or of another size than its annotation's <size>."""
        return read_image(self.image_path(image_id), self.annotated_size(image_id))

    def annotated_size(self, image_id: str) -> tuple[int, int] | None:
        """(width, height) of ``image_id`` from its annotation's <size>, if it has one."""
        return xml_size(self.annotation_path(image_id))

    def annotation(self, image_id: str) -> Annotation:
        """Parsed ground truth of ``image_id`` (cached)."""
        ann = self._cache.get(image_id)
        if ann is not None:
            return ann
        ann, issues, unknown = parse_annotation_xml(
            self.annotation_path(image_id), image_id, self.classes)
        if unknown:
            self._raise_unknown_classes(self.annotation_path(image_id), unknown)
        if image_id not in self._issues_seen:
            self._issues_seen.add(image_id)
            for issue in issues:
                log.warning("%s: %s box %s %s: %s", self.annotation_path(image_id),
                            issue.class_name, issue.voc_box, issue.action, issue.reason)
            self.box_issues.extend(issues)
        self._cache[image_id] = ann
        return ann

    def annotations(self) -> Iterable[Annotation]:
        for image_id in self.ids:
            yield self.annotation(image_id)

    def _raise_unknown_classes(self, xml_path: Path, unknown: list[str]) -> None:
        found: set[str] = set()
        for image_id in self.ids:
            try:
                root = ET.parse(self.annotation_path(image_id)).getroot()
            except (OSError, ET.ParseError):
                continue
            found.update(_text(o, "name") or "" for o in root.findall("object"))
        found.discard("")
        missing = sorted(found - set(self.classes)) or sorted(set(unknown))
        raise DataError(
            f"{xml_path}: class {unknown[0]!r} is not in the class list "
            f"({len(self.classes)} classes: {', '.join(self.classes[:5])}"
            f"{', ...' if len(self.classes) > 5 else ''}). Classes found in this split: "
            f"{', '.join(sorted(found))}; not covered: {', '.join(missing)}. "
            f"Give a class file with --classes (one name per line).")


def read_image(path: str | Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file completely as HxWx3 uint8 BGR, EXIF orientation applied, with the
    toolkit's one reader (``proposals.images``: truncated or damaged files are refused);
    ``expected_size`` (width, height) must match. DataError naming the file otherwise."""
    from proposals.errors import ImageReadError
    from proposals.images import read_image as read_complete_image

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file missing")
    try:
        return read_complete_image(path, expected_size)
    except ImageReadError as e:
        raise DataError(str(e)) from None


def xml_size(xml_path: str | Path) -> tuple[int, int] | None:
    """(width, height) from an annotation's <size>; None when the file or a usable size is
    absent (other problems of the file are reported where it is parsed)."""
    try:
        size = ET.parse(xml_path).getroot().find("size")
        width = int(float(_text(size, "width") or 0)) if size is not None else 0
        height = int(float(_text(size, "height") or 0)) if size is not None else 0
    except (OSError, ET.ParseError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 else None

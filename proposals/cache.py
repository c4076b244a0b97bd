"""The per-image proposal cache: a directory with meta.json and one .npz per image.

Layout (the contract read by the feature, training and test steps)::

    DIR/meta.json        {"format": 1, "method": "ss-fast", "params": {...}}
    DIR/<image_id>.npz   boxes float32 (N, 4) internal (x1, y1, x2, y2), original pixels,
                         inside the image, best first; scores float32 (N,);
                         image_hw int32 (2,) the image's height and width

Every file is written atomically, so a killed run leaves no partial file under a final
name; a resumed run still checks each existing file cheaply (``problem``: a full disk or a
copy cut short can damage one) and recomputes damaged ones. One writer per directory.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from proposals.atomic import remove_stale_temporaries, save_json, save_npz
from proposals.errors import CacheMismatchError, CacheMissingError, ProposalError
from proposals.npz_files import npz_problem
from proposals.postprocess import Proposals

FORMAT_VERSION = 1
META_NAME = "meta.json"
REQUIRED_ARRAYS = ("boxes", "scores")  # image_hw too, in files of this version


def _canonical(obj: Any) -> Any:
    """JSON round trip, so that tuples and lists (and key order) compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True))


class ProposalCache:
    """Read (and, after ``create``, write) the proposals of a directory."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._meta: dict[str, Any] | None = None

    # ----------------------------------------------------------------- writing
    @classmethod
    def create(cls, root: str | os.PathLike, method: str, params: dict[str, Any]) -> "ProposalCache":
        """Open ``root`` for writing proposals of ``method`` with ``params``.

        A new directory records them in meta.json. An existing one must have been made
        with the same method and parameters, else ``CacheMismatchError`` lists the
        differences. Stale temporary files of an interrupted run are removed.
        """
        cache = cls(root)
        meta = {"format": FORMAT_VERSION, "method": method, "params": _canonical(params)}
        meta_path = cache.root / META_NAME
        if meta_path.exists():
            old = cache.meta
            if old.get("method") != method or _canonical(old.get("params")) != meta["params"]:
                raise CacheMismatchError(
                    f"{cache.root}: holds proposals made with other settings "
                    f"({_describe_diff(old, meta)}); use another --out directory, or delete "
                    f"this one to recompute")
        else:
            if cache.root.exists() and not cache.root.is_dir():
                raise ProposalError(f"{cache.root}: exists and is not a directory")
            if cache.root.is_dir() and any(cache.root.glob("*.npz")):
                raise CacheMismatchError(f"{cache.root}: has .npz files but no {META_NAME}; "
                                         f"refusing to mix them with new proposals")
            save_json(meta_path, meta)
            cache._meta = meta
        remove_stale_temporaries(cache.root)  # of killed runs; a running writer's are kept
        return cache

    def save(self, image_id: str, proposals: Proposals, image_hw: tuple[int, int]) -> Path:
        """Atomically write one image's proposals."""
        path = self.path(image_id)
        save_npz(path, boxes=np.asarray(proposals.boxes, dtype=np.float32).reshape(-1, 4),
                 scores=np.asarray(proposals.scores, dtype=np.float32).reshape(-1),
                 image_hw=np.asarray(image_hw, dtype=np.int32))
        return path

    # ----------------------------------------------------------------- reading
    @property
    def meta(self) -> dict[str, Any]:
        """The directory's meta.json (method, params, format)."""
        if self._meta is None:
            meta_path = self.root / META_NAME
            if not meta_path.is_file():
                raise CacheMissingError(f"{self.root}: not a proposal directory ({META_NAME} missing); "
                                        f"make one with `sppdet proposals`")
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError) as e:
                raise ProposalError(f"{meta_path}: unreadable ({e})") from None
            _check_meta(meta, meta_path)
            self._meta = meta
        return self._meta

    @property
    def method(self) -> str:
        return str(self.meta["method"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.meta["params"])

    def path(self, image_id: str) -> Path:
        if not image_id or "/" in image_id or "\\" in image_id or image_id.startswith("."):
            raise ProposalError(f"invalid image id {image_id!r}")
        return self.root / f"{image_id}.npz"

    def has(self, image_id: str) -> bool:
        return self.path(image_id).is_file()

    def problem(self, image_id: str) -> str | None:
        """Why this image's file is damaged (empty, truncated, arrays missing), or None when
        it is complete; reads only the file's zip directory (``npz_files.npz_problem``)."""
        return npz_problem(self.path(image_id), REQUIRED_ARRAYS)

    def ids(self) -> list[str]:
        """Ids of every image with a finished file, sorted."""
        return sorted(p.stem for p in self.root.glob("*.npz") if not p.name.startswith("."))

    def load(self, image_id: str, image_hw: tuple[int, int] | None = None) -> np.ndarray:
        """Boxes (N, 4) float32, internal convention, original pixels, best first;
        ``image_hw`` (height, width): the image they are for must have that size."""
        return self.load_proposals(image_id, image_hw).boxes

    def load_proposals(self, image_id: str, image_hw: tuple[int, int] | None = None) -> Proposals:
        """Boxes and scores of one image. With ``image_hw``, the size recorded with them must
        match (``ProposalError`` otherwise: boxes of another image size would be wrong)."""
        self.meta  # noqa: B018  (fail early, and clearly, on a directory that is not a cache)
        path = self.path(image_id)
        if not path.is_file():
            raise CacheMissingError(f"{path}: no proposals for image {image_id!r} "
                                    f"(run `sppdet proposals` for it, or check the id)")
        try:
            with np.load(path, allow_pickle=False) as data:
                boxes = np.asarray(data["boxes"])
                scores = np.asarray(data["scores"]).astype(np.float32).reshape(-1)
                recorded = (tuple(int(v) for v in np.asarray(data["image_hw"]).reshape(-1))
                            if "image_hw" in data.files else None)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise ProposalError(f"{path}: unreadable proposal file, damaged ({type(e).__name__}: "
                                f"{e}); run `sppdet proposals` again to recompute it") from None
        _check_arrays(path, boxes.shape, len(scores), recorded, boxes)
        boxes = boxes.astype(np.float32).reshape(-1, 4)
        if image_hw is not None and recorded is not None and recorded != tuple(int(v) for v in image_hw):
            raise ProposalError(
                f"{path}: proposals of a {recorded[1]}x{recorded[0]} image (width x height), but "
                f"image {image_id!r} is {int(image_hw[1])}x{int(image_hw[0])}; they were computed "
                f"from another image: compute proposals for these images into another folder")
        return Proposals(boxes=boxes, scores=scores)


def _check_meta(meta: Any, meta_path: Path) -> None:
    """meta.json's keys: ``format`` this version's, ``method`` a name, ``params`` an object
    of plain values (``ProposalError`` naming the file and the key)."""
    if not isinstance(meta, dict):
        raise ProposalError(f"{meta_path}: not a JSON object")
    if meta.get("format") != FORMAT_VERSION:
        raise ProposalError(f"{meta_path}: key 'format': unknown format {meta.get('format')!r} "
                            f"(this version reads format {FORMAT_VERSION})")
    if not isinstance(meta.get("method"), str) or not meta["method"]:
        raise ProposalError(f"{meta_path}: key 'method': must be a method name, got "
                            f"{meta.get('method')!r}")
    params = meta.get("params", {})
    if not isinstance(params, dict):
        raise ProposalError(f"{meta_path}: key 'params': must be an object, got {params!r}")
    plain = (str, int, float, bool, type(None))
    for k, v in params.items():
        if not isinstance(v, plain) and not (isinstance(v, list) and all(isinstance(x, plain) for x in v)):
            raise ProposalError(f"{meta_path}: key 'params.{k}': must be a plain value or a list of "
                                f"them, got {v!r}")


def _check_arrays(path: Path, boxes_shape: tuple[int, ...], n_scores: int,
                  image_hw: tuple[int, ...] | None, boxes: np.ndarray) -> None:
    """A proposal file's arrays agree: ``boxes`` (N, 4) finite, ``scores`` (N,),
    ``image_hw`` (2,) positive (``ProposalError`` naming the file and the array)."""
    n = 0 if boxes.size == 0 else boxes_shape[0]
    if boxes.size and (len(boxes_shape) != 2 or boxes_shape[1] != 4):
        raise ProposalError(f"{path}: key 'boxes': shape {boxes_shape}, expected (N, 4)")
    if boxes.dtype.kind not in "fiu":
        raise ProposalError(f"{path}: key 'boxes': {boxes.dtype} values, expected numbers")
    if n_scores != n:
        raise ProposalError(f"{path}: key 'scores': {n_scores} scores for {n} boxes")
    if image_hw is not None and (len(image_hw) != 2 or min(image_hw) < 1):
        raise ProposalError(f"{path}: key 'image_hw': is {image_hw}, expected (height, width) >= 1")
    if boxes.size and not np.isfinite(boxes).all():
        raise ProposalError(f"{path}: key 'boxes': holds NaN or infinite values")


def _describe_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """A short, readable list of what differs between two meta dicts."""
    if old.get("method") != new.get("method"):
        return f"method {old.get('method')!r} there, {new.get('method')!r} asked"
    a, b = _canonical(old.get("params") or {}), new["params"]
    diffs = [f"{k}: {a.get(k)!r} there, {b.get(k)!r} asked"
             for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "; ".join(diffs) or "format differs"

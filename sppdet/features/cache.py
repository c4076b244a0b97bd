"""The conv-map cache: one float16 file per image, pooled on demand.

Layout of a cache directory::

    manifest.json        {"format", "config", "hash", "levels", "sppdet"}
    <image_id>.npz       map_0 .. map_{S-1} (C, H_s, W_s) float16, factors (S, 2),
                         image_hw (2,), scales (S,)
    flipped/<image_id>.npz   the same for the image mirrored left-right (optional:
                         `sppdet extract --flip`, read by `finetune --flip`)

``config`` holds everything the maps depend on (backbone, weights, layer, geometry,
scales, longer-side cap) and the proposal method; ``hash`` is a digest of it. Opening a
cache with another configuration raises ``ConfigMismatchError`` naming the keys that
differ. Caching maps rather than pooled windows keeps a VOC image at a few MB instead of
about 100 MB (2,000 windows x 12,800 floats).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from proposals.npz_files import npz_problem
from sppdet import __version__
from sppdet import schema
from sppdet.errors import ArgumentError, ConfigMismatchError, DataError
from sppdet.features.config import (PROPOSALS_FIELDS, FeatureConfig, describe_differences,
                                    differing_keys, feature_fields)
from sppdet.features.extractor import FeatureMaps, pool_windows
from sppdet.features.spp import DEFAULT_LEVELS, SpatialPyramidPooling
from sppdet.fileio import load_json, remove_stale_temporaries, save_npz

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
FLIPPED = "flipped"  # sub-folder of the mirrored images' maps
REQUIRED_KEYS = ("backbone", "weights", "layer", "channels", "stride", "offset", "scales", "max_size")

# What manifest.json must hold (``sppdet.schema``; checked whenever a cache is opened). The
# feature settings' backbone may be any name: training also runs on synthetic caches.
_CONFIG_FIELDS = {k: v for k, v in feature_fields(registered_backbone=False).items() if k != "levels"}
MANIFEST_FIELDS: dict[str, schema.Key] = {
    "format": schema.Key(schema.integer()),
    "config": schema.Key(schema.mapping({
        **_CONFIG_FIELDS, "proposals": schema.Key(schema.mapping(PROPOSALS_FIELDS), required=False)})),
    "hash": schema.Key(schema.text(), required=False),
    "levels": schema.Key(schema.list_of(schema.integer(1, 1000), min_len=1, unique=True), required=False),
    "sppdet": schema.Key(schema.text(), required=False),
}


def config_hash(config: dict[str, Any]) -> str:
    """Short stable digest of a configuration (sorted-key JSON)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _create_exclusively(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` only if no file is there, atomically: written whole under a
    temporary name, then hard-linked to ``path`` (which fails if it exists). Of two
    processes creating the same cache, one wins and the other then reads and checks it."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # no hard links on this file system: exclusive create, then write
            with contextlib.suppress(FileExistsError):
                with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "w") as f:
                    f.write(text)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _check_image_id(image_id: str) -> str:
    if not image_id or image_id.startswith(".") or any(c in image_id for c in "/\\\0"):
        raise DataError(f"invalid image id {image_id!r} for a cache file name")
    return image_id


class FeatureCache:
    """Conv maps of a data set's images, with the configuration that made them."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        path = self.dir / MANIFEST
        if not path.is_file():
            raise DataError(f"{self.dir}: not a feature cache (no {MANIFEST}); run `sppdet extract` first")
        try:
            manifest = load_json(path)
        except ValueError as e:
            raise DataError(f"{path}: unreadable cache manifest ({e})") from e
        schema.validate(manifest, MANIFEST_FIELDS, path)
        if manifest["format"] != CACHE_FORMAT:
            raise schema.invalid(path, "format", f"cache format {manifest['format']}, this sppdet "
                                                 f"reads {CACHE_FORMAT}")
        config = manifest["config"]
        self.config: dict[str, Any] = config
        self.hash: str = config_hash(config)
        self.levels: tuple[int, ...] = tuple(manifest.get("levels", DEFAULT_LEVELS))
        self.spp = SpatialPyramidPooling(self.levels)

    @classmethod
    def create(cls, directory: str | os.PathLike, config: dict[str, Any],
               levels: Sequence[int] = DEFAULT_LEVELS) -> "FeatureCache":
        """Open the cache at ``directory`` for ``config``, creating it if absent.

        An existing cache made with another configuration is refused
        (``ConfigMismatchError`` naming the differing keys); it is never overwritten.
        """
        directory = Path(directory)
        config = json.loads(json.dumps(config))  # plain JSON types, as stored
        if not (directory / MANIFEST).exists():
            missing = [k for k in REQUIRED_KEYS if k not in config]
            if missing:
                raise ArgumentError(f"{directory}: cache config lacks {', '.join(missing)}")
            if directory.exists() and any(directory.glob("*.npz")):
                raise DataError(f"{directory}: holds .npz files but no {MANIFEST}; choose an empty folder")
            directory.mkdir(parents=True, exist_ok=True)
            _create_exclusively(directory / MANIFEST, {
                "format": CACHE_FORMAT, "config": config, "hash": config_hash(config),
                "levels": list(levels), "sppdet": __version__})
        cache = cls(directory)  # ours, or one another process created first: then checked
        cache.check(config)
        remove_stale_temporaries(directory)  # of killed runs; other writers' are kept
        if (directory / FLIPPED).is_dir():
            remove_stale_temporaries(directory / FLIPPED)
        return cache

    def check(self, config: dict[str, Any]) -> None:
        """Raise ConfigMismatchError unless ``config`` is the one this cache was made with."""
        config = json.loads(json.dumps(config))
        if config_hash(config) == self.hash:
            return
        diffs = describe_differences(self.config, config, differing_keys(self.config, config),
                                     ("cache has", "asked"))
        raise ConfigMismatchError(
            f"feature cache {self.dir} was made with another configuration ({diffs}); "
            f"use another output folder or delete this one")

    @property
    def dim(self) -> int:
        return self.spp.output_dim(int(self.config["channels"]))

    @property
    def feature_config(self) -> FeatureConfig:
        """The typed feature settings of the maps (the manifest's config and levels)."""
        return FeatureConfig.from_dict({**self.config, "levels": list(self.levels)},
                                       str(self.dir / MANIFEST))

    def path(self, image_id: str, flipped: bool = False) -> Path:
        """The file of an image's maps (``flipped``: of its left-right mirror)."""
        folder = self.dir / FLIPPED if flipped else self.dir
        return folder / f"{_check_image_id(image_id)}.npz"

    def has(self, image_id: str, flipped: bool = False) -> bool:
        return self.path(image_id, flipped).is_file()

    def problem(self, image_id: str, flipped: bool = False) -> str | None:
        """Why this image's file is damaged (empty, truncated, arrays missing), or None when
        it is complete; reads only the file's zip directory, so a resumed run can check
        every file it skips."""
        maps = [f"map_{i}" for i in range(len(self.config["scales"]))]
        return npz_problem(self.path(image_id, flipped), [*maps, "factors", "image_hw", "scales"])

    def image_ids(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.npz") if not p.name.startswith("."))

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("*.npz"))

    def save(self, image_id: str, maps: FeatureMaps, flipped: bool = False) -> Path:
        """Write one image's maps (float16) atomically (``flipped``: its mirror's maps)."""
        if tuple(maps.scales) != tuple(self.config["scales"]):
            raise ArgumentError(f"{self.dir}: maps at scales {maps.scales}, the cache holds scales "
                                f"{self.config['scales']}")
        arrays = {f"map_{i}": m.detach().to("cpu", torch.float16).numpy() for i, m in enumerate(maps.maps)}
        arrays["factors"] = np.asarray(maps.factors, dtype=np.float64)
        arrays["image_hw"] = np.asarray(maps.image_hw, dtype=np.int64)
        arrays["scales"] = np.asarray(maps.scales, dtype=np.int64)
        path = self.path(image_id, flipped)
        if flipped:
            path.parent.mkdir(exist_ok=True)
        save_npz(path, **arrays)
        return path

    def load_maps(self, image_id: str, device: str | torch.device = "cpu",
                  flipped: bool = False) -> FeatureMaps:
        """Read one image's maps (float16 tensors on ``device``; ``flipped``: the maps of
        the image mirrored left-right, made by ``sppdet extract --flip``)."""
        path = self.path(image_id, flipped)
        if not path.is_file():
            what = "its mirrored maps are" if flipped else "it is"
            hint = "; run `sppdet extract --flip` on the same images" if flipped else ""
            raise DataError(f"{path}: image {image_id!r}: {what} not in the feature cache {self.dir}{hint}")
        try:
            with np.load(path, allow_pickle=False) as data:
                scales = tuple(int(s) for s in data["scales"])
                maps = [torch.from_numpy(data[f"map_{i}"]).to(device) for i in range(len(scales))]
                factors = data["factors"].astype(np.float64)
                hw = tuple(int(v) for v in data["image_hw"])
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: unreadable cache file, damaged ({type(e).__name__}: {e}); "
                            f"run `sppdet extract` again to recompute it") from None
        if scales != tuple(self.config["scales"]):
            raise DataError(f"{path}: scales {scales} differ from the manifest's {self.config['scales']}")
        channels = int(self.config["channels"])
        for i, m in enumerate(maps):
            if m.ndim != 3 or m.shape[0] != channels:
                raise schema.invalid(path, f"map_{i}", f"shape {tuple(m.shape)}, expected ({channels}, H, W) "
                                                       f"(channels in {self.dir / MANIFEST})")
        if factors.shape != (len(scales), 2):
            raise schema.invalid(path, "factors", f"shape {factors.shape}, expected ({len(scales)}, 2)")
        if not (np.isfinite(factors).all() and (factors > 0).all()):
            raise schema.invalid(path, "factors", "must be positive finite numbers")
        if len(hw) != 2 or min(hw) < 1:
            raise schema.invalid(path, "image_hw", f"is {hw}, expected (height, width), both >= 1")
        return FeatureMaps(maps, factors, (hw[0], hw[1]), scales)

    @torch.inference_mode()
    def pooled(self, image_id: str, boxes: np.ndarray,
               device: str | torch.device = "cpu") -> np.ndarray:
        """(N, D) float32 SPP features of internal boxes (original image pixels)."""
        maps = self.load_maps(image_id, device)
        feats = pool_windows(maps, boxes, int(self.config["stride"]), float(self.config["offset"]), self.spp)
        return feats.cpu().numpy()

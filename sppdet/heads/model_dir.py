"""The model directory: everything detection needs except the backbone's own weights.

Layout (the directory is replaced as a whole by ``sppdet.atomic_dir.atomic_directory``:
a killed run leaves the previous model or the new one, never a mix; ``config.json`` marks a
complete model):

- ``config.json``: ``format_version``, the feature settings (backbone, weights, layer,
  scales, SPP levels, max size: copied from the feature cache's manifest), the proposal
  method, ``head`` (``pool`` or ``fc7``), class names, ``feature_scale`` (and ``fc7_scale``),
  test-time defaults (NMS IoU, score threshold, detections per image), training summary;
- ``heads.npz``: ``svm_W`` (C, D), ``svm_b`` (C,), and, with box regression,
  ``bbox_W`` (C, D_pool, 4), ``bbox_b``, ``bbox_mean``, ``bbox_std`` (C, 4);
- ``fc.npz`` (heads ``fc7`` and ``softmax``): the fine-tuned fc layers (``FcHead`` state
  dict arrays and its sizes as JSON in ``config``), written by ``sppdet finetune`` together
  with ``finetune.json``. Format version 1 stored them with ``torch.save`` in ``fc.pt``,
  which still loads.
- ``conv_top.npz`` (models fine-tuned below the pyramid, config ``conv_top``): the conv
  layers above the cached trunk (``features.conv_top``); windows are pooled on their output.

Heads (registered in ``heads.kinds``): ``pool`` (SVMs on scaled pooled features), ``fc7``
(SVMs on fc7 of fine-tuned fc layers) and ``softmax`` (the fine-tuned network's own (C + 1)-way
classifier and box-delta output, Fast R-CNN's; no ``heads.npz`` SVMs, scores are class
probabilities).

Weight matrices are stored as float32, or, in a packed model (``sppdet.models.pack``), as
float16 or per-row int8 (config ``weights_storage``, module ``weight_storage``); they always load as float32.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection

import numpy as np
import torch

from sppdet.atomic_dir import atomic_directory, recover_directory
from sppdet.defaults import MAX_PER_IMAGE, NMS_IOU, SCORE_THRESHOLD
from sppdet import schema
from sppdet.errors import ArgumentError, ConfigMismatchError, ModelFormatError
from sppdet.features.config import (FEATURE_KEYS, PROPOSALS_FIELDS, WEIGHTS_DESCRIPTION, WEIGHTS_PATTERN,
                                    check_same, feature_fields)
from sppdet.fileio import atomic_path, save_json, save_npz
from sppdet.features.spp import DEFAULT_LEVELS
from sppdet.features.conv_top import TOP_FILE, ConvTop, ConvTopConfig, load_conv_top
from sppdet.heads.bbox_regression import BoxRegressor
from sppdet.heads.fc_head import FcHead
from sppdet.heads.kinds import FC_HEADS, HEADS, HeadSpec, head_spec
from sppdet.heads.scoring import WindowScorer, apply_deltas
from sppdet.heads.weight_storage import encode, input_aware_factors, read_npz

if TYPE_CHECKING:
    from sppdet.features.extractor import FeatureExtractor, FeatureMaps

FORMAT_VERSION = 2
CONFIG_FILE = "config.json"
HEADS_FILE = "heads.npz"
FC_FILE = "fc.npz"
LEGACY_FC_FILE = "fc.pt"  # format version 1
FINETUNE_FILE = "finetune.json"

# Feature settings copied to the top level of config.json from the feature cache manifest
# (``FEATURE_KEYS``, read as a ``features.config.FeatureConfig``).

# Test-time defaults of the official SPP-net code (recorded in every model's config.json).
TEST_DEFAULTS = {"nms_iou": NMS_IOU, "score_threshold": SCORE_THRESHOLD, "max_per_image": MAX_PER_IMAGE}

STORAGES = ("float32", "float16", "int8")

# What every key of config.json that detection reads must be (``sppdet.schema``); checked
# on every read (``read_config``), the arrays' shapes against it in ``load_model``.
# Unlisted keys (training summaries, the feature cache's manifest) are records only.
def _known_head(value: Any) -> None:
    """A registered head kind (``heads.kinds``), with the registry's wording."""
    if not isinstance(value, str) or value not in HEADS:
        raise schema.Invalid(f"unknown head {value!r}; known heads: {', '.join(HEADS)}")


TEST_FIELDS: dict[str, schema.Key] = {
    "score_threshold": schema.Key(schema.number(), required=False),
    "nms_iou": schema.Key(schema.number(0, 1), required=False),
    "max_per_image": schema.Key(schema.integer(1), required=False),
    "display_threshold": schema.Key(schema.number(), required=False),
    "display_thresholds": schema.Key(schema.mapping(values=schema.number()), required=False),
    "display_thresholds_from": schema.Key(schema.text(), required=False),
}
CONV_TOP_FIELDS: dict[str, schema.Key] = {
    "backbone": schema.Key(schema.text()),
    "start": schema.Key(schema.integer(0)),
    "end": schema.Key(schema.integer(1)),
    "in_channels": schema.Key(schema.integer(1)),
    "channels": schema.Key(schema.integer(1)),
    "stride": schema.Key(schema.integer(1)),
    "offset": schema.Key(schema.number()),
    "init_weights": schema.Key(schema.text(pattern=WEIGHTS_PATTERN, describe=WEIGHTS_DESCRIPTION)),
    "reduce": schema.Key(schema.nullable(schema.integer(1)), required=False),
}
MODEL_FIELDS: dict[str, schema.Key] = {
    "format_version": schema.Key(schema.integer(1, FORMAT_VERSION)),
    # Checked when present; detection requires them all (``FeatureConfig.from_dict``).
    **feature_fields(required=False, registered_backbone=False),
    "head": schema.Key(lambda v: _known_head(v)),
    "classes": schema.Key(schema.list_of(schema.text(), min_len=1, unique=True)),
    "feature_scale": schema.Key(schema.number(positive=True)),
    "fc7_scale": schema.Key(schema.nullable(schema.number(positive=True)), required=False),
    "bbox_regression": schema.Key(schema.boolean(), required=False),
    "num_classes": schema.Key(schema.integer(1), required=False),
    "svm_dim": schema.Key(schema.integer(1), required=False),
    "proposals": schema.Key(schema.mapping(PROPOSALS_FIELDS), required=False),
    "test": schema.Key(schema.mapping(TEST_FIELDS), required=False),
    "conv_top": schema.Key(schema.mapping(CONV_TOP_FIELDS), required=False),
    "weights_storage": schema.Key(schema.text(choices=STORAGES), required=False),
    "fc6_rank": schema.Key(schema.integer(1), required=False),
    "fc6_rank_fit": schema.Key(schema.text(), required=False),
}
FINETUNE_FIELDS: dict[str, schema.Key] = {
    "format_version": schema.Key(schema.integer(1, FORMAT_VERSION)),
    "classes": schema.Key(schema.list_of(schema.text(), min_len=1, unique=True)),
    "feature_scale": schema.Key(schema.number(positive=True)),
    "features": schema.Key(schema.mapping()),
}


def validate_config(cfg: dict[str, Any], file: str | Path, complete: bool = True) -> None:
    """Check a model's config.json (the keys of ``MODEL_FIELDS`` and how they agree with
    each other); ``InvalidValueError`` names the file and the key. ``complete=False``: only
    the keys present (a config.json that only receives settings, e.g. display thresholds)."""
    schema.validate(cfg, MODEL_FIELDS, file, require=complete)
    classes = cfg.get("classes")
    if classes is not None and "num_classes" in cfg and cfg["num_classes"] != len(classes):
        raise schema.invalid(file, "num_classes", f"is {cfg['num_classes']}, but 'classes' lists "
                                                  f"{len(classes)}")
    spec = HEADS.get(cfg.get("head"))  # type: ignore[arg-type]
    if spec is not None and spec.svm_input == "fc7" and not isinstance(cfg.get("fc7_scale"), (int, float)):
        raise schema.invalid(file, "fc7_scale", "missing; head fc7 needs it (a positive number)")
    unknown = sorted(set(cfg.get("test", {}).get("display_thresholds", {})) - set(classes or []))
    if classes is not None and unknown:
        raise schema.invalid(file, f"test.display_thresholds.{unknown[0]}",
                             "not one of the model's classes")
    top = cfg.get("conv_top")
    if top is not None and top["end"] <= top["start"]:
        raise schema.invalid(file, "conv_top.end", f"must be above conv_top.start ({top['start']}), "
                                                   f"got {top['end']}")
    if top is not None and "backbone" in cfg and top["backbone"] != cfg["backbone"]:
        raise schema.invalid(file, "conv_top.backbone", f"is {top['backbone']!r}, the model's "
                                                        f"backbone is {cfg['backbone']!r}")


@dataclass
class DetectorModel:
    """Trained heads plus the configuration that produced their features.

    ``score`` and ``regress`` take raw pooled features (N, D_pool) straight from SPP.
    """

    config: dict[str, Any]
    svm_W: np.ndarray | None  # (C, D) float32; None for head softmax
    svm_b: np.ndarray | None  # (C,) float32
    bbox: BoxRegressor | None = None
    fc: FcHead | None = None
    path: Path | None = field(default=None, compare=False)
    conv_top: ConvTop | None = None

    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])

    @property
    def head(self) -> str:
        return self.config["head"]

    @property
    def head_spec(self) -> HeadSpec:
        """The registered kind of this model's head (``heads.kinds``)."""
        return head_spec(self.head, f"{self.path or 'model'} config head", ArgumentError)

    @property
    def feature_scale(self) -> float:
        return float(self.config["feature_scale"])

    def scaled(self, pooled: np.ndarray) -> np.ndarray:
        """Pooled features times the stored feature scale (float32)."""
        return np.asarray(pooled, np.float32) * np.float32(self.feature_scale)

    def svm_features(self, pooled: np.ndarray) -> np.ndarray:
        """The SVMs' input: scaled pooled features, or scaled fc7 outputs for head ``fc7``."""
        x = self.scaled(pooled)
        if self.head_spec.svm_input == "fc7":
            assert self.fc is not None
            x = self.fc.fc7_numpy(x) * np.float32(self.config["fc7_scale"])
        return x

    def scorer(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> WindowScorer:
        """The heads as batched torch computations on ``device`` in ``dtype`` (``heads.scoring``)."""
        return WindowScorer(self, device, dtype)

    def score(self, pooled: np.ndarray) -> np.ndarray:
        """(N, C) scores of windows from their pooled features (N, D_pool): SVM scores, or
        class probabilities for head ``softmax`` (numpy wrapper over ``scorer``)."""
        return self.predict(pooled, np.zeros((len(pooled), 4)), bbox_reg=False)[0]

    def predict(self, pooled: np.ndarray, boxes: np.ndarray, bbox_reg: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
        """Scores (N, C) and per-class boxes (N, C, 4) of windows ``boxes`` (N, 4) from their
        pooled features, in one pass of the fc layers (numpy wrapper over ``scorer``)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scorer = self.scorer()
        x = torch.from_numpy(np.asarray(pooled, np.float32))
        scores, hidden = scorer.scores(x)
        deltas = scorer.deltas(x, hidden) if bbox_reg else None
        if deltas is None:
            return scores.double().numpy(), self._unregressed(boxes)
        return scores.double().numpy(), _regressed_all(boxes, deltas)

    def _unregressed(self, boxes: np.ndarray) -> np.ndarray:
        return np.repeat(boxes[:, None, :], len(self.classes), axis=1)

    def pool(self, maps: "FeatureMaps", windows: np.ndarray, extractor: "FeatureExtractor") -> np.ndarray:
        """``pool_tensor`` as a numpy array."""
        return self.pool_tensor(maps, windows, extractor).cpu().numpy()

    @torch.inference_mode()
    def top_maps(self, maps: "FeatureMaps", extractor: "FeatureExtractor") -> "FeatureMaps":
        """A conv fine-tuned model's conv top run on the cached-layer ``maps`` (on the
        extractor's device): the maps its windows are pooled on."""
        if self.conv_top is None:
            raise ArgumentError(f"{self.path or 'model'}: no conv top (not a conv fine-tuned model)")
        top = self.conv_top.to(extractor.device)
        return top.apply_to_maps(maps.to(extractor.device))

    @torch.inference_mode()
    def pool_tensor(self, maps: "FeatureMaps", windows: np.ndarray, extractor: "FeatureExtractor",
                    top_maps: "FeatureMaps | None" = None) -> torch.Tensor:
        """(N, D_pool) float32 pooled features of ``windows`` on the cached-layer ``maps``, on
        the extractor's device: straight from them, or, for a conv fine-tuned model, from its
        conv top's output (``top_maps`` when already computed, see ``top_maps``)."""
        from sppdet.features.extractor import pool_windows

        source, stride, offset = self._pooled_maps(maps, extractor, top_maps)
        return pool_windows(source, windows, stride, offset, extractor.spp)

    @torch.inference_mode()
    def pool_distinct(self, maps: "FeatureMaps", windows: np.ndarray, extractor: "FeatureExtractor",
                      top_maps: "FeatureMaps | None" = None, dtype: torch.dtype | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``pool_tensor`` with windows on the same cells pooled once: (D, D_pool) features in
        ``dtype`` (default float32; the scorer's) and each window's row (N,) (the detector
        scores each distinct window once)."""
        from sppdet.features.extractor import pool_distinct_windows

        source, stride, offset = self._pooled_maps(maps, extractor, top_maps)
        return pool_distinct_windows(source, windows, stride, offset, extractor.spp, dtype)

    def _pooled_maps(self, maps: "FeatureMaps", extractor: "FeatureExtractor",
                     top_maps: "FeatureMaps | None") -> tuple["FeatureMaps", int, float]:
        """The maps this model pools on (the backbone's, or its conv top's output), their
        stride and offset."""
        if self.conv_top is None:
            return maps.to(extractor.device), extractor.backbone.stride, extractor.backbone.offset
        if top_maps is None:
            top_maps = self.top_maps(maps, extractor)
        return top_maps, self.conv_top.stride, self.conv_top.offset

    def regress(self, pooled: np.ndarray, boxes: np.ndarray,
                class_idx: int | np.ndarray | None = None) -> np.ndarray:
        """Box-regressed windows: (N, 4) for one class / per-box classes, (N, C, 4) for None.

        Without box regression in the model the boxes come back unchanged.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        regressed = self.predict(pooled, boxes)[1]
        if class_idx is None:
            return regressed
        idx = np.broadcast_to(np.asarray(class_idx, np.int64), (len(boxes),))
        return regressed[np.arange(len(boxes)), idx]


def _regressed_all(boxes: np.ndarray, deltas: torch.Tensor) -> np.ndarray:
    """(N, C, 4) float64 boxes: each of ``boxes`` (N, 4) moved by its (N, C, 4) ``deltas``."""
    n, c, _ = deltas.shape
    b = torch.from_numpy(boxes).repeat_interleave(c, dim=0)
    return apply_deltas(b, deltas.reshape(-1, 4).double()).reshape(n, c, 4).numpy()


# Arrays that stay float32 in a packed model: small offsets that rounding would shift.
KEEP_FLOAT32 = ("svm_b", "bbox_b", "bbox_mean", "bbox_std")


def save_model(path: str | Path, model: DetectorModel, storage: str = "float32",
               fc6_rank: int | None = None, fc6_inputs: np.ndarray | None = None) -> Path:
    """Write ``model`` into directory ``path`` (created if needed), weight matrices stored
    as ``storage`` (float32, float16 or int8; see ``weight_storage``), fc6's weights at
    rank ``fc6_rank`` if given (head fc7; fitted to the sample ``fc6_inputs`` of fc6's
    inputs if given, else a plain truncated SVD); returns the path.

    The directory changes all at once (``sppdet.atomic_dir``): a run killed while writing
    leaves the previous model whole. Other files in it are kept."""
    with atomic_directory(path) as tmp:
        write_model(tmp, model, storage, fc6_rank, fc6_inputs)
    return Path(path)


def write_model(path: str | Path, model: DetectorModel, storage: str = "float32",
                fc6_rank: int | None = None, fc6_inputs: np.ndarray | None = None) -> Path:
    """``save_model``'s files written straight into ``path``, one by one: for a directory
    that ``atomic_directory`` swaps in afterwards, together with other files."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = dict(model.config)
    cfg["format_version"] = FORMAT_VERSION
    spec = head_spec(cfg.get("head"), f"{path / CONFIG_FILE} (being written)", ArgumentError)
    if spec.classifier:
        if model.fc is None or not model.fc.has_bbox and cfg.get("bbox_regression"):
            raise ArgumentError(f"head {spec.name} needs fc layers (with box deltas for box regression)")
        cfg["num_classes"] = int(model.fc.num_classes)
        (path / HEADS_FILE).unlink(missing_ok=True)
    else:
        cfg["num_classes"], cfg["svm_dim"] = int(model.svm_W.shape[0]), int(model.svm_W.shape[1])
        cfg["bbox_regression"] = model.bbox is not None
        arrays = {"svm_W": np.asarray(model.svm_W, np.float32), "svm_b": np.asarray(model.svm_b, np.float32)}
        if model.bbox is not None:
            arrays.update(bbox_W=model.bbox.W, bbox_b=model.bbox.b, bbox_mean=model.bbox.mean,
                          bbox_std=model.bbox.std)
        save_npz(path / HEADS_FILE, **encode(arrays, storage, KEEP_FLOAT32))
    if spec.fc_layers:
        if model.fc is None:
            raise ArgumentError(f"head {spec.name} needs the fc layers")
        save_fc(path / FC_FILE, model.fc, storage, fc6_rank, fc6_inputs)
    if model.conv_top is not None:
        model.conv_top.save(path / TOP_FILE, storage)
        cfg["conv_top"] = model.conv_top.config.as_dict()
    else:
        cfg.pop("conv_top", None)
    cfg.pop("weights_storage", None)
    cfg.pop("fc6_rank", None)
    cfg.pop("fc6_rank_fit", None)
    if storage != "float32":
        cfg["weights_storage"] = storage
    if fc6_rank is not None and spec.fc_layers:
        cfg["fc6_rank"] = int(fc6_rank)
        cfg["fc6_rank_fit"] = "input-aware" if fc6_inputs is not None else "svd"
    save_json(path / CONFIG_FILE, cfg)
    return path


def save_fc(path: str | Path, fc: FcHead, storage: str = "float32", fc6_rank: int | None = None,
            fc6_inputs: np.ndarray | None = None) -> None:
    """Atomically write the fc layers (an .npz of the state dict's arrays, weight matrices
    stored as ``storage``, fc6's at rank ``fc6_rank`` if given, fitted to ``fc6_inputs``
    if given, plus the sizes as JSON); ``load_fc`` reads them back as float32."""
    state = {k: v.detach().cpu().float().numpy() for k, v in fc.state_dict().items()}
    ranks = factors = None
    if fc6_rank is not None and fc6_inputs is not None:
        factors = {"fc6.weight": input_aware_factors(state["fc6.weight"], fc6_inputs, fc6_rank)}
    elif fc6_rank is not None:
        ranks = {"fc6.weight": fc6_rank}
    save_npz(path, config=np.array(json.dumps(fc.config())),
             **encode(state, storage, ranks=ranks, factors=factors))


def fc_file(model_dir: str | Path) -> Path:
    """The fc layers' file of a model directory: ``fc.npz``, or a version-1 ``fc.pt``."""
    model_dir = Path(model_dir)
    legacy = model_dir / LEGACY_FC_FILE
    return legacy if legacy.is_file() and not (model_dir / FC_FILE).is_file() else model_dir / FC_FILE


def load_fc(path: str | Path, device: str | torch.device = "cpu") -> FcHead:
    """Read fc layers written by ``save_fc`` (or a version-1 ``fc.pt``)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: fc layers missing (run `sppdet finetune` first)")
    try:
        if path.suffix == ".pt":
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                raise ModelFormatError(f"{path}: not a valid fc layers file (it holds objects other "
                                       f"than tensors, which are not read: unpickling can run "
                                       f"code)") from None
            config, state = blob["config"], blob["state_dict"]
        else:
            factors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            arrays = read_npz(path, factors)
            config = json.loads(str(arrays.pop("config")))
            state = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in arrays.items()}
        fc = FcHead(**config)
        fc.load_state_dict({k: v.float() for k, v in state.items()})
        if path.suffix != ".pt" and "fc6.weight" in factors:
            u, v = factors["fc6.weight"]
            fc.set_fc6_factors(torch.from_numpy(u), torch.from_numpy(v))
    except (KeyError, TypeError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise ModelFormatError(f"{path}: not a valid fc layers file ({e})") from None
    return fc.to(device).eval()


def update_test_settings(path: str | Path, entries: dict[str, Any]) -> Path:
    """Merge ``entries`` into the ``test`` settings of a model's config.json (atomically)."""
    cfg = read_config(path)
    cfg["test"] = {**cfg.get("test", {}), **entries}
    file = Path(path) / CONFIG_FILE
    save_json(file, cfg)
    return file


def read_config(path: str | Path, name: str = CONFIG_FILE) -> dict[str, Any]:
    """Read and version-check a model directory's JSON file."""
    file = Path(path) / name
    if not Path(path).exists():
        with contextlib.suppress(OSError):
            recover_directory(path)  # a replacement killed between its two renames
    if not Path(path).is_dir():
        raise ModelFormatError(f"{path}: model directory does not exist")
    if not file.is_file():
        raise ModelFormatError(f"{file}: missing, {path} is not a complete model directory")
    try:
        cfg = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{file}: not valid JSON ({e})") from None
    version = cfg.get("format_version") if isinstance(cfg, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFormatError(f"{file}: key 'format_version': must be an integer, got "
                               f"{version!r}; not an sppdet model file")
    if version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{file}: key 'format_version': format version {version} is newer than this sppdet supports "
            f"({FORMAT_VERSION}); upgrade sppdet")
    if version < 1:
        raise ModelFormatError(f"{file}: key 'format_version': unknown format version {version}")
    if name == CONFIG_FILE:
        validate_config(cfg, file, complete=False)  # load_model requires the keys it needs
    elif name == FINETUNE_FILE:
        schema.validate(cfg, FINETUNE_FIELDS, file)
    return cfg


def pooled_dim(cfg: dict[str, Any]) -> int | None:
    """Length of a window's pooled feature vector: the pooled layer's channels (the conv
    top's output for a conv fine-tuned model) times the SPP bins; None when the config
    records no channels (a model of synthetic features)."""
    channels = cfg["conv_top"]["channels"] if "conv_top" in cfg else cfg.get("channels")
    if channels is None:
        return None
    return int(channels) * sum(int(n) ** 2 for n in cfg.get("levels", DEFAULT_LEVELS))


def _check_shape(file: Path, key: str, array: np.ndarray, shape: tuple[int, ...], why: str,
                 minus_inf: bool = False) -> None:
    """``array`` has ``shape`` and finite values (``minus_inf``: -inf allowed too)."""
    if array.shape != shape:
        raise schema.invalid(file, key, f"shape {array.shape}, expected {shape} ({why})")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) & ~(np.isneginf(array) if minus_inf else False)
        if bad.any():
            raise schema.invalid(file, key, "holds NaN or infinite values")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> DetectorModel:
    """Load a model directory written by ``save_model``; clear errors for bad directories.

    config.json is checked key by key (``read_config``), then every array against it:
    the classes, the pooled feature size (channels times SPP bins), the fc layers' sizes.
    """
    path = Path(path)
    cfg = read_config(path)
    config_file = path / CONFIG_FILE
    validate_config(cfg, config_file, complete=True)
    spec = head_spec(cfg.get("head"), str(config_file))
    C, d_pool = len(cfg["classes"]), pooled_dim(cfg)
    conv_top = None
    if "conv_top" in cfg:
        conv_top = load_conv_top(path / TOP_FILE, ConvTopConfig.from_dict(cfg["conv_top"], str(config_file)))
        conv_top = conv_top.to(device)

    def fc_layers() -> FcHead:
        fc = load_fc(fc_file(path), device)
        if d_pool is not None and fc.in_dim != d_pool:
            raise ModelFormatError(f"{fc_file(path)}: fc6 takes {fc.in_dim} inputs, but {config_file} "
                                   f"gives pooled features of {d_pool} (channels x SPP bins of 'levels')")
        return fc

    if spec.classifier:
        fc = fc_layers()
        if fc.num_classes != C:
            raise ModelFormatError(f"{path}: the fc layers have {fc.num_classes} classes, "
                                   f"{CONFIG_FILE} lists {C}")
        if cfg.get("bbox_regression") and not fc.has_bbox:
            raise ModelFormatError(f"{path}: box regression enabled but the fc layers have no box output")
        return DetectorModel(cfg, None, None, None, fc, path, conv_top)
    heads_file = path / HEADS_FILE
    if not heads_file.is_file():
        raise ModelFormatError(f"{heads_file}: missing, {path} is not a complete model directory")
    try:
        arrays = read_npz(heads_file)  # float16 / int8 storage (a packed model) reads as float32
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ModelFormatError(f"{heads_file}: unreadable ({e})") from None
    for key in ("svm_W", "svm_b"):
        if key not in arrays:
            raise ModelFormatError(f"{heads_file}: array {key!r} missing")
    W, b = arrays["svm_W"], arrays["svm_b"]
    fc = fc_layers() if spec.fc_layers else None
    if d_pool is None:  # no feature settings recorded: the SVMs define the pooled size
        d_pool = fc.in_dim if fc is not None else int(W.shape[-1])
    D = fc.hidden if fc is not None else d_pool
    why = f"{C} classes in {config_file}" + (f", fc7 of {fc.hidden}" if fc is not None else
                                             f", pooled features of {d_pool}")
    _check_shape(heads_file, "svm_W", W, (C, D), why)
    _check_shape(heads_file, "svm_b", b, (C,), why, minus_inf=True)  # -inf: a class never trained
    if "svm_dim" in cfg and cfg["svm_dim"] != D:
        raise schema.invalid(config_file, "svm_dim", f"is {cfg['svm_dim']}, but the SVMs take {D} features")
    bbox = None
    if cfg.get("bbox_regression"):
        try:
            parts = [arrays[k] for k in ("bbox_W", "bbox_b", "bbox_mean", "bbox_std")]
        except KeyError as e:
            raise ModelFormatError(f"{heads_file}: box regression array {e} missing") from None
        why = f"{C} classes, pooled features of {d_pool} in {config_file}"
        _check_shape(heads_file, "bbox_W", parts[0], (C, d_pool, 4), why)
        for key, array in zip(("bbox_b", "bbox_mean", "bbox_std"), parts[1:]):
            _check_shape(heads_file, key, array, (C, 4), why)
        bbox = BoxRegressor(*parts)
    return DetectorModel(cfg, W, b, bbox, fc, path, conv_top)


def copy_fc(src_dir: str | Path, dst_dir: str | Path) -> None:
    """Copy fine-tuned fc layers (and their finetune.json, and a conv top's weights) into
    another model directory."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if src_dir.resolve() == dst_dir.resolve():
        return
    dst_dir.mkdir(parents=True, exist_ok=True)
    extra = [src_dir / TOP_FILE] if (src_dir / TOP_FILE).is_file() else []
    for src in (fc_file(src_dir), src_dir / FINETUNE_FILE, *extra):
        with atomic_path(dst_dir / src.name) as tmp:
            shutil.copyfile(src, tmp)


def check_same_features(expected: dict[str, Any], found: dict[str, Any], where: str) -> None:
    """Raise ConfigMismatchError when two feature configurations differ (any key)."""
    check_same(expected, found, where)


def save_finetuned(path: str | Path, fc: FcHead, info: dict[str, Any],
                   exclude: Collection[str] = ()) -> list[str]:
    """Write fine-tuned fc layers (``fc.npz``) and their record (``finetune.json``: feature
    scale, classes, feature settings, parameters, summary) into model directory ``path``,
    all at once (``sppdet.atomic_dir``), without the entries named in ``exclude`` (a
    checkpoint). A model already there that used the old fc layers (head fc7 or softmax:
    ``config.json``, ``heads.npz``, ``conv_top.npz``) is dropped with them; returns the names
    of the files so dropped."""
    path = Path(path)
    dropped = []
    if (path / CONFIG_FILE).is_file():
        with contextlib.suppress(ModelFormatError):
            if read_config(path).get("head") in FC_HEADS:
                dropped = [n for n in (CONFIG_FILE, HEADS_FILE, TOP_FILE) if (path / n).exists()]
    with atomic_directory(path, exclude={*exclude, *dropped, LEGACY_FC_FILE, TOP_FILE}) as tmp:
        save_fc(tmp / FC_FILE, fc)
        save_json(tmp / FINETUNE_FILE, {**info, "format_version": FORMAT_VERSION})
    return dropped


def load_finetune_info(path: str | Path, classes: Any, features: dict[str, Any]) -> dict[str, Any]:
    """Read ``finetune.json`` and check it matches the classes and the feature cache."""
    path = Path(path)
    if not (path / FINETUNE_FILE).is_file():
        raise ModelFormatError(f"{path / FINETUNE_FILE}: missing; run `sppdet finetune --out {path}` "
                               f"first, or pass --finetuned DIR")
    info = read_config(path, FINETUNE_FILE)
    if list(info.get("classes", [])) != list(classes):
        raise ConfigMismatchError(f"{path / FINETUNE_FILE}: fine-tuned for classes "
                                  f"{info.get('classes')}, not {list(classes)}")
    check_same_features(dict(info.get("features", {})), dict(features), str(path / FINETUNE_FILE))
    if not isinstance(info.get("feature_scale"), (int, float)):
        raise ModelFormatError(f"{path / FINETUNE_FILE}: no feature_scale")
    return info

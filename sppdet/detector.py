"""Detection: image(s) in, scored boxes out.

For each image: proposals -> conv maps once per scale -> SPP features of every window ->
per-class SVM scores -> per-class box regression -> per-class NMS (torchvision.ops) -> the
best ``max_per_image`` detections, in original image pixels.

Several models can be combined as in the paper (two SPP-nets, 60.9 mAP): every model scores
the same windows, and NMS runs on the union of their scored, regressed boxes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms

from sppdet.boxes import clip_boxes
from sppdet.defaults import MAX_PER_IMAGE, NMS_IOU, SCORE_THRESHOLD
from sppdet.detections import Detections
from sppdet.device import resolve_device
from sppdet.errors import ArgumentError, ConfigMismatchError, ModelFormatError, SppdetError
from sppdet.features.backbones import get_backbone
from sppdet.features.config import FeatureConfig, check_same
from sppdet.features.extractor import FeatureExtractor, FeatureMaps
from sppdet.features.spp import DEFAULT_LEVELS
from sppdet.heads.model_dir import DetectorModel, load_model

if TYPE_CHECKING:
    from sppdet.result import DetectionResult

Proposer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DetectionParams:
    """Test-time settings (defaults: the official SPP-net code's).

    ``class_thresholds``, when given, replaces ``score_threshold`` with one threshold per
    class (the display thresholds `sppdet eval --save-display-thresholds` chooses).
    """

    score_threshold: float = SCORE_THRESHOLD
    nms_iou: float = NMS_IOU
    max_per_image: int = MAX_PER_IMAGE
    class_thresholds: tuple[float, ...] | None = None

    def thresholds(self, num_classes: int) -> np.ndarray:
        """(C,) score threshold of each class."""
        if self.class_thresholds is None:
            return np.full(num_classes, self.score_threshold, dtype=np.float64)
        if len(self.class_thresholds) != num_classes:
            raise ArgumentError(f"{len(self.class_thresholds)} class thresholds for {num_classes} classes")
        return np.asarray(self.class_thresholds, dtype=np.float64)

    @classmethod
    def from_model(cls, model: DetectorModel, **overrides: Any) -> "DetectionParams":
        test = dict(model.config.get("test", {}))
        values = {k: test[k] for k in ("score_threshold", "nms_iou", "max_per_image") if k in test}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def feature_key(config: dict[str, Any]) -> FeatureConfig:
    """What a model's features depend on; models with equal keys share one conv pass."""
    return FeatureConfig.from_dict(config, "model config")


def build_extractor(config: dict[str, Any], device: torch.device) -> FeatureExtractor:
    """The feature extractor a model was trained with (backbone weights via torchvision)."""
    weights = str(config["weights"])
    if weights.startswith("random"):
        weights = "random"
    elif weights.startswith("file:"):
        raise SppdetError(
            f"the model's backbone weights came from a local file ({weights}); "
            "that file is needed again: pass it with --weights")
    backbone = get_backbone(config["backbone"], weights)
    if backbone.weights != config["weights"] and not str(config["weights"]).startswith("random"):
        raise SppdetError(f"backbone weights {backbone.weights!r} differ from the model's "
                          f"{config['weights']!r}")
    return FeatureExtractor(backbone, config["scales"], config["max_size"], device,
                            config.get("levels", DEFAULT_LEVELS))


def nms_per_class(boxes: np.ndarray, scores: np.ndarray, params: DetectionParams,
                  image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Threshold, per-class NMS and the top ``max_per_image`` of (N, C, 4) boxes, (N, C) scores.

    Returns (boxes (K, 4), scores (K,), labels (K,)) sorted by descending score.
    """
    rows, labels = np.nonzero(scores > params.thresholds(scores.shape[1])[None, :])
    if rows.size == 0:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    cand = clip_boxes(boxes[rows, labels], image_hw[1], image_hw[0])
    cand_scores = scores[rows, labels]
    keep = batched_nms(torch.from_numpy(cand), torch.from_numpy(cand_scores),
                       torch.from_numpy(labels), params.nms_iou).numpy()
    keep = keep[: params.max_per_image]  # batched_nms returns indices by descending score
    return cand[keep], cand_scores[keep], labels[keep].astype(np.int64)


class Detector:
    """One or more trained models with the feature extractors they need."""

    def __init__(self, models: Sequence[DetectorModel], device: str | torch.device | None = None,
                 params: DetectionParams | None = None, proposer: Proposer | None = None,
                 bbox_reg: bool = True):
        if not models:
            raise ArgumentError("at least one model is needed")
        classes = models[0].classes
        for m in models[1:]:
            if m.classes != classes:
                raise SppdetError(f"models to combine must share their classes: {m.path} has "
                                  f"{m.classes}, {models[0].path} has {classes}")
        self.models = list(models)
        self.classes = classes
        self.bbox_reg = bbox_reg  # False: windows keep their proposal boxes
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.params = params or DetectionParams.from_model(models[0])
        self.extractors: dict[FeatureConfig, FeatureExtractor] = {}
        for m in self.models:
            key = feature_key(m.config)
            if key not in self.extractors:
                self.extractors[key] = build_extractor(m.config, self.device)
        self._proposer = proposer

    @property
    def proposer(self) -> Proposer:
        if self._proposer is None:
            self._proposer = proposer_for(self.models[0].config.get("proposals", {}))
        return self._proposer

    @classmethod
    def load(cls, model: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
             device: str | torch.device | None = None, *, score_threshold: float | None = None,
             nms_iou: float | None = None, max_per_image: int | None = None,
             proposals: str | None = None) -> "Detector":
        """A detector from model directories, with the display thresholds of `sppdet detect`.

        Args:
            model: a model directory, a list of them (combined by NMS on the union of their
                scored windows), or None for the model shipped in the package.
            device: "cpu", "cuda", "cuda:N" (default: cuda when available, else cpu).
            score_threshold: keep detections scoring above this in every class (default: the
                model's per-class display thresholds; ``sppdet.defaults.SCORE_THRESHOLD``
                keeps what evaluation keeps).
            nms_iou: IoU of per-class NMS (default: the model's, ``defaults.NMS_IOU``).
            max_per_image: at most this many detections per image (default: the model's,
                ``defaults.MAX_PER_IMAGE``).
            proposals: proposal method (ss-fast, ss-quality, edgeboxes; default: the model's).

        Returns:
            A :class:`Detector`; call it on an image to get a :class:`~sppdet.result.DetectionResult`.

        Example:
            >>> det = sppdet.Detector.load()                 # doctest: +SKIP
            >>> result = det("photo.jpg")                    # doctest: +SKIP
            >>> result.boxes, result.scores, result.class_names  # doctest: +SKIP
        """
        from sppdet.display import display_params

        if model is None:
            from sppdet.models import shipped_model_dir

            model = shipped_model_dir()
        dirs = [model] if isinstance(model, (str, os.PathLike)) else list(model)
        models = load_models(dirs)
        params = display_params(models[0], score_threshold, nms_iou, max_per_image)
        proposer = proposer_for(models[0].config.get("proposals", {}), proposals) if proposals else None
        return cls(models, device, params, proposer)

    def __call__(self, image: Any, color: str = "rgb") -> "DetectionResult":
        """Detect objects in one image.

        Args:
            image: a file path, a PIL image, or a uint8 numpy array (H, W, 3) / (H, W, 4) /
                (H, W) (see :func:`sppdet.image_input.to_bgr`).
            color: channel order of a numpy array, "rgb" (default) or "bgr" (OpenCV).

        Returns:
            :class:`~sppdet.result.DetectionResult`: ``boxes`` (N, 4) x1, y1, x2, y2 in the
            image's pixels, ``scores`` (N,), ``labels`` (N,), ``class_names`` (N names),
            best first.
        """
        from sppdet.image_input import to_bgr
        from sppdet.result import DetectionResult

        bgr, source = to_bgr(image, color)
        dets = self.detect(bgr, image_id=Path(source).stem if source else "")
        return DetectionResult.from_detections(dets, self.classes, bgr.shape[:2], source)

    def conv_maps(self, image_bgr: np.ndarray) -> dict[FeatureConfig, FeatureMaps]:
        return {key: ex.conv_maps(image_bgr) for key, ex in self.extractors.items()}

    def detect(self, image_bgr: np.ndarray, image_id: str = "", proposals: np.ndarray | None = None,
               maps: dict[tuple, FeatureMaps] | None = None) -> Detections:
        """Detections of one BGR image (proposals and conv maps are computed when not given)."""
        hw = (int(image_bgr.shape[0]), int(image_bgr.shape[1]))
        if proposals is None:
            proposals = self.proposer(image_bgr)
        if maps is None:
            maps = self.conv_maps(image_bgr)
        return self.detect_windows(np.asarray(proposals, np.float64).reshape(-1, 4), maps, hw, image_id)

    def detect_windows(self, windows: np.ndarray, maps: dict[tuple, FeatureMaps],
                       image_hw: tuple[int, int], image_id: str = "") -> Detections:
        """Score, regress and suppress ``windows`` (N, 4) given every model's conv maps."""
        if len(windows) == 0:
            return Detections.empty(image_id)
        all_boxes, all_scores = [], []
        pooled_by_key: dict[tuple, np.ndarray] = {}
        for model in self.models:
            key = feature_key(model.config)
            # Models with their own conv top pool on its output; the others share pooling.
            pool_key = key if model.conv_top is None else (key, id(model))
            if pool_key not in pooled_by_key:
                pooled_by_key[pool_key] = model.pool(maps[key], windows, self.extractors[key])
            scores, boxes = model.predict(pooled_by_key[pool_key], windows, bbox_reg=self.bbox_reg)
            all_scores.append(scores)
            all_boxes.append(boxes)
        boxes, scores, labels = nms_per_class(np.concatenate(all_boxes), np.concatenate(all_scores),
                                              self.params, image_hw)
        return Detections(image_id, boxes, scores, labels)


def proposer_for(proposals_config: dict[str, Any], method: str | None = None) -> Proposer:
    """The proposal method a model was trained with (or ``method``), as image -> boxes.

    The model records the proposal cache's method and parameters; those that configure the
    method (common options and the method's own keyword arguments) are passed back.
    """
    from proposals import create_method_from_params

    name = method or proposals_config.get("method") or "ss-fast"
    params = dict(proposals_config.get("params", {})) if method is None else {}
    proposer = create_method_from_params(name, params)
    return lambda image_bgr: proposer(image_bgr).boxes


def load_models(model_dirs: Sequence[str | os.PathLike], device: str | torch.device = "cpu"
                ) -> list[DetectorModel]:
    """Load model directories, with a clear error for a missing or incompatible one."""
    models = []
    for d in model_dirs:
        if not Path(d).is_dir():
            raise ModelFormatError(f"{d}: model directory not found")
        models.append(load_model(d, device))
    return models


def detect_dataset(model_dir: str | os.PathLike | Sequence[str | os.PathLike], dataset: Any,
                   proposals_dir: str | os.PathLike | None = None,
                   features_dir: str | os.PathLike | None = None,
                   device: str | None = None, progress: bool = True, bbox_reg: bool = True,
                   **param_overrides: Any) -> Iterator[Detections]:
    """Detections for every image of ``dataset``, reusing proposal and feature caches if given."""
    from tqdm import tqdm

    dirs = [model_dir] if isinstance(model_dir, (str, os.PathLike)) else list(model_dir)
    models = load_models(dirs)
    classes = getattr(dataset, "classes", None)
    if classes is not None and list(models[0].classes) != list(classes):
        raise ConfigMismatchError(f"{models[0].path}: the model's classes {models[0].classes} differ "
                                  f"from the data set's {list(classes)} (give the same --classes)")
    params = DetectionParams.from_model(models[0], **param_overrides)
    detector = Detector(models, device, params, bbox_reg=bbox_reg)
    proposal_cache = feature_cache = None
    if proposals_dir is not None:
        from sppdet.features.proposal_files import ProposalFiles

        proposal_cache = ProposalFiles(proposals_dir)
    if features_dir is not None:
        from sppdet.features.cache import FeatureCache

        feature_cache = FeatureCache(features_dir)
        if len(detector.extractors) != 1:
            raise SppdetError("--features works with one feature configuration; "
                              "combined models with different backbones compute their own maps")
        key = next(iter(detector.extractors))
        # The cache must hold the maps the model was trained on (every feature setting).
        check_same(key.to_dict(), feature_cache.feature_config.to_dict(), f"feature cache {features_dir}")
    for image_id in tqdm(dataset.ids, desc="detect", unit="img", disable=not progress):
        image = None
        if proposal_cache is not None and proposal_cache.has(image_id):
            windows = proposal_cache.load(image_id)
        else:
            image = dataset.load_image(image_id)
            windows = detector.proposer(image)
        if feature_cache is not None and feature_cache.has(image_id):
            maps = {key: feature_cache.load_maps(image_id, detector.device)}
            hw = maps[key].image_hw
        else:
            image = dataset.load_image(image_id) if image is None else image
            maps = detector.conv_maps(image)
            hw = image.shape[:2]
        yield detector.detect_windows(np.asarray(windows, np.float64).reshape(-1, 4), maps,
                                      (int(hw[0]), int(hw[1])), image_id)

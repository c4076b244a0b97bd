"""Detection: image(s) in, scored boxes out.

For each image: proposals -> conv maps once per scale -> SPP features of every window ->
per-class scores (SVMs or softmax, ``heads.kinds``) -> per-class box regression -> per-class NMS (torchvision.ops) -> the
best ``max_per_image`` detections, in original image pixels.

Several models can be combined as in the paper (two SPP-nets, 60.9 mAP): every model scores
the same windows, and NMS runs on the union of their scored, regressed boxes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms

from sppdet.defaults import BBOX_REG, MAX_PER_IMAGE, NMS_IOU, PROPOSAL_WORKERS, SCORE_THRESHOLD
from sppdet.detections import Detections
from sppdet.device import resolve_device, scoring_dtype
from sppdet.errors import (ArgumentError, ConfigMismatchError, ModelFormatError, SppdetError,
                           WeightsError)
from sppdet.features.backbones import get_backbone, recorded_file_weights, resolve_recorded_weights
from sppdet.features.config import FeatureConfig, check_same
from sppdet.features.extractor import FeatureExtractor, FeatureMaps
from sppdet.features.spp import DEFAULT_LEVELS
from sppdet.heads.model_dir import DetectorModel, load_model
from sppdet.heads.scoring import apply_deltas
from sppdet.perf import usable_cores
from sppdet.presets import get_preset
from sppdet.timing import StageTimer, stage

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


def feature_key(config: dict[str, Any], where: str = "model config") -> FeatureConfig:
    """What a model's features depend on; models with equal keys share one conv pass.
    Every key checked (``features.config.FEATURE_FIELDS``; errors name ``where``)."""
    return FeatureConfig.from_dict(config, where)


def weights_files(weights: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    """The backbone weights files given (``--weights``): one path, several, or none."""
    if weights is None:
        return []
    if isinstance(weights, (str, os.PathLike)):
        return [Path(weights)]
    return [Path(w) for w in weights]


def build_extractor(config: dict[str, Any], device: torch.device,
                    weights: Sequence[str | os.PathLike] = (), where: str = "the model",
                    digests: dict[Path, str] | None = None) -> FeatureExtractor:
    """The feature extractor a model was trained with: random weights rebuilt from their
    seed, torchvision weights by name, and weights from a file (``extract --weights FILE``)
    from the one of ``weights`` whose sha256 the model records (``WeightsError`` otherwise)."""
    recorded = str(config["weights"])
    argument = resolve_recorded_weights(recorded, list(weights), where, digests)
    backbone = get_backbone(config["backbone"], argument)
    if (recorded_file_weights(recorded) is None and not recorded.startswith("random")
            and backbone.weights != recorded):
        raise SppdetError(f"{where}: backbone weights {backbone.weights!r} differ from the model's "
                          f"{recorded!r}")
    return FeatureExtractor(backbone, config["scales"], config["max_size"], device,
                            config.get("levels", DEFAULT_LEVELS))


def nms_per_class(boxes: np.ndarray, scores: np.ndarray, params: DetectionParams,
                  image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Threshold, per-class NMS and the top ``max_per_image`` of (N, C, 4) boxes, (N, C) scores.

    Returns (boxes (K, 4), scores (K,), labels (K,)) sorted by descending score.
    """
    scores_t, boxes_t = torch.as_tensor(scores), torch.as_tensor(boxes)
    thresholds = torch.as_tensor(params.thresholds(scores.shape[1]), dtype=scores_t.dtype)
    rows, labels = torch.nonzero(scores_t > thresholds[None, :], as_tuple=True)
    b, s, l = suppress(boxes_t[rows, labels], scores_t[rows, labels], labels, params, image_hw)
    return b.numpy(), s.numpy(), l.numpy()


def suppress(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, params: DetectionParams,
             image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clip candidate boxes (K, 4) to the image, per-class NMS (torchvision's batched_nms, on
    the tensors' device), keep the best ``max_per_image``; sorted by descending score, equal
    scores by candidate index."""
    if boxes.shape[0] == 0:
        return boxes.new_zeros((0, 4)), scores.new_zeros(0), labels.new_zeros(0, dtype=torch.int64)
    h, w = image_hw
    boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                         boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], dim=1)
    # Equal scores (windows that pool the same cells) are ranked by their index, so that the
    # result does not depend on the sort's tie order: NMS runs on the stable rank.
    order = torch.sort(scores, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    keep = batched_nms(boxes, -rank.to(boxes.dtype), labels, params.nms_iou)[: params.max_per_image]
    # batched_nms returns indices by descending (rank) score
    return boxes[keep], scores[keep], labels[keep].to(torch.int64)


class Detector:
    """One or more trained models with the feature extractors they need."""

    def __init__(self, models: Sequence[DetectorModel], device: str | torch.device | None = None,
                 params: DetectionParams | None = None, proposer: Proposer | None = None,
                 bbox_reg: bool = BBOX_REG, timer: StageTimer | None = None,
                 weights: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                 overlap: bool | None = None, precision: str = "float32"):
        """``timer``: a :class:`~sppdet.timing.StageTimer` that receives the seconds of each
        stage of every image (None: nothing is timed). ``overlap``: compute an image's
        proposals in a second thread beside its conv pass (same detections; None: when torch
        leaves a core free for it, see ``overlaps``). ``weights``: the backbone weights
        file(s) of models whose features came from ``sppdet extract --weights FILE`` (each
        model takes the file whose sha256 it records); a file no model uses is refused.
        ``precision``: of the fc layers, classifiers and box deltas, "float32" or "bfloat16"
        (used only where native: ``sppdet.device.scoring_dtype``)."""
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
        files, digests = weights_files(weights), {}
        for f in files:
            if not f.is_file():
                raise WeightsError(f"{f}: weights file not found (--weights)")
        for m in self.models:
            where = str(m.path / "config.json") if m.path is not None else "model config"
            key = feature_key(m.config, where)
            if key not in self.extractors:
                self.extractors[key] = build_extractor(m.config, self.device, files, where, digests)
        recorded = {recorded_file_weights(str(m.config["weights"])) for m in self.models}
        used = {digest for _, digest in filter(None, recorded)}
        for f in files:
            if digests.get(f) not in used:
                models = ", ".join(f"{m.path or 'model'} ({m.config['weights']})" for m in self.models)
                raise WeightsError(f"{f}: --weights given, but no model was trained with this file "
                                   f"(backbone weights of {models})")
        self._proposer = proposer
        self.scoring_dtype = scoring_dtype(precision, self.device)
        self.scorers = [m.scorer(self.device, self.scoring_dtype) for m in self.models]
        self.timer = timer
        self.overlap = overlap

    @property
    def overlaps(self) -> bool:
        """Whether ``detect`` runs the proposals in a second thread beside the conv pass:
        ``overlap`` if set, else when the conv runs on a GPU or torch has fewer threads than
        this process has cores (``torch.set_num_threads``; the CLI leaves one core to the
        proposals). A proposal thread on a core that torch's threads also use makes them
        wait for each other at every barrier."""
        if self.overlap is not None:
            return self.overlap
        return self.device.type == "cuda" or torch.get_num_threads() < usable_cores()

    @property
    def proposer(self) -> Proposer:
        if self._proposer is None:
            self._proposer = proposer_for(self.models[0].config.get("proposals", {}))
        return self._proposer

    @classmethod
    def load(cls, model: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
             device: str | torch.device | None = None, *, score_threshold: float | None = None,
             nms_iou: float | None = None, max_per_image: int | None = None,
             proposals: str | None = None, preset: str | None = None,
             weights: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
             precision: str | None = None) -> "Detector":
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
            preset: test-time settings (``sppdet.presets``): "model" (default, the model's
                own) or "fast" (EdgeBoxes, 1,000 boxes, one scale, bfloat16 fc layers).
            precision: "float32" or "bfloat16" for the layers after the conv (default: the
                preset's); bfloat16 only where native (AMX / AVX-512 BF16 CPUs, CUDA).
            weights: for a model whose features came from ``sppdet extract --weights FILE``:
                that file (or a list, one per such model when combining). Checked against
                the sha256 the model records; other models need none.

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
        proposer = apply_preset(models, preset, proposals)
        return cls(models, device, params, proposer, weights=weights,
                   precision=precision or get_preset(preset).precision)

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

    def proposal_method(self) -> Any:
        """The proposal method object (picklable, for worker processes); SppdetError for a
        custom proposer function."""
        proposer = self.proposer
        if not isinstance(proposer, MethodProposer):
            raise SppdetError("proposal workers need a registered proposal method "
                              "(a custom proposer function runs in this process: use workers=0)")
        return proposer.method

    def conv_maps(self, image_bgr: np.ndarray) -> dict[Any, FeatureMaps]:
        """Every conv map one image needs: the backbone's per feature configuration and, for
        conv fine-tuned models, their conv top's output on those (keyed ("top", model index);
        neither needs the proposals, so both run beside them)."""
        with stage(self.timer, "conv", self.device):
            maps: dict[Any, FeatureMaps] = {key: ex.conv_maps(image_bgr) for key, ex in self.extractors.items()}
            return self.with_top_maps(maps)

    def with_top_maps(self, maps: dict[Any, FeatureMaps]) -> dict[Any, FeatureMaps]:
        """``maps`` (the backbone's, per feature configuration) with every conv top's output
        added where missing (keyed ("top", model index))."""
        for i, model in enumerate(self.models):
            if model.conv_top is not None and ("top", i) not in maps:
                key = feature_key(model.config)
                maps[("top", i)] = model.top_maps(maps[key], self.extractors[key])
        return maps

    def propose(self, image_bgr: np.ndarray) -> np.ndarray:
        """The proposal method's windows (N, 4) of one BGR image."""
        with stage(self.timer, "proposals"):
            return self.proposer(image_bgr)

    def detect(self, image_bgr: np.ndarray, image_id: str = "", proposals: np.ndarray | None = None,
               maps: dict[Any, FeatureMaps] | None = None) -> Detections:
        """Detections of one BGR image (proposals and conv maps are computed when not given)."""
        hw = (int(image_bgr.shape[0]), int(image_bgr.shape[1]))
        if proposals is None and maps is None and self.overlaps:
            # OpenCV and torch release the GIL: the proposals run beside the conv pass.
            with ThreadPoolExecutor(1, thread_name_prefix="sppdet-proposals") as pool:
                job = pool.submit(self.propose, image_bgr)
                maps = self.conv_maps(image_bgr)
                proposals = job.result()
        if proposals is None:
            proposals = self.propose(image_bgr)
        if maps is None:
            maps = self.conv_maps(image_bgr)
        return self.detect_windows(np.asarray(proposals, np.float64).reshape(-1, 4), maps, hw, image_id)

    def detect_windows(self, windows: np.ndarray, maps: dict[Any, FeatureMaps],
                       image_hw: tuple[int, int], image_id: str = "") -> Detections:
        """Score, regress and suppress ``windows`` (N, 4) given every model's conv maps.

        Everything after the conv maps runs in torch on the detector's device: pooling, the
        heads as batched float32 matrix products (``heads.scoring``), box regression of the
        windows above a class's score threshold only, and per-class NMS.
        """
        if len(windows) == 0:
            return Detections.empty(image_id)
        timer, dev = self.timer, self.device
        windows = np.asarray(windows, np.float64).reshape(-1, 4)
        thresholds = torch.as_tensor(self.params.thresholds(len(self.classes)), dtype=torch.float32,
                                     device=dev)
        if any(m.conv_top is not None and ("top", i) not in maps for i, m in enumerate(self.models)):
            with stage(timer, "conv", dev):  # conv tops on maps given from a cache
                maps = self.with_top_maps(dict(maps))
        cand_boxes, cand_scores, cand_labels = [], [], []
        pooled_by_key: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}
        window_t: torch.Tensor | None = None
        for i, (model, scorer) in enumerate(zip(self.models, self.scorers)):
            key = feature_key(model.config)
            # Models with their own conv top pool on its output; the others share pooling.
            pool_key = key if model.conv_top is None else ("top", i)
            if pool_key not in pooled_by_key:
                with stage(timer, "pooling", dev):
                    # Windows on the same cells have the same features: each is scored once.
                    pooled_by_key[pool_key] = model.pool_distinct(maps[key], windows, self.extractors[key],
                                                                  maps.get(("top", i)), self.scoring_dtype)
            pooled, window_row = pooled_by_key[pool_key]
            with stage(timer, "scoring", dev):
                distinct_scores, hidden = scorer.scores(pooled)
                scores = distinct_scores.index_select(0, window_row)
                rows, labels = torch.nonzero(scores > thresholds[None, :], as_tuple=True)
            with stage(timer, "bbox_reg", dev):
                if window_t is None:
                    window_t = torch.as_tensor(windows, dtype=torch.float32, device=dev)
                boxes = window_t.index_select(0, rows)
                if self.bbox_reg and scorer.has_bbox_reg and rows.numel():
                    # Regress only the windows with a class above its threshold.
                    needed, inverse = torch.unique(window_row.index_select(0, rows), return_inverse=True)
                    deltas = scorer.deltas(pooled, hidden, needed)
                    assert deltas is not None
                    boxes = apply_deltas(boxes, deltas[inverse, labels])
            cand_boxes.append(boxes)
            cand_scores.append(scores[rows, labels])
            cand_labels.append(labels)
        with stage(timer, "nms", dev):
            boxes, scores, labels = suppress(torch.cat(cand_boxes), torch.cat(cand_scores),
                                             torch.cat(cand_labels), self.params, image_hw)
            return Detections(image_id, boxes.double().cpu().numpy(), scores.double().cpu().numpy(),
                              labels.cpu().numpy())


def proposer_for(proposals_config: dict[str, Any], method: str | None = None,
                 max_boxes: int | None = None) -> Proposer:
    """The proposal method a model was trained with (or ``method``), as image -> boxes.

    The model records the proposal cache's method and parameters; those that configure the
    method (common options and the method's own keyword arguments) are passed back.
    ``max_boxes`` overrides the number of boxes kept.

    A model never names a file to read: a recorded ``edge_model`` path is ignored (EdgeBoxes'
    structured edge model comes only from ``SPPDET_EDGE_MODEL``), and the edge detector so
    built must be the recorded one (kind, and the edge model's sha256), else an SppdetError
    says what to set: other edges would give other proposals than the model was trained on.
    """
    from proposals import DEFAULT_METHOD, create_method_from_params

    name = method or proposals_config.get("method") or DEFAULT_METHOD
    params = dict(proposals_config.get("params", {})) if method is None else {}
    params.pop("edge_model", None)
    if max_boxes is not None:
        params["max_boxes"] = int(max_boxes)
    created = create_method_from_params(name, params)
    edges = getattr(created, "edges", None)
    if "edges" in params and edges is not None:
        built = edges.params()
        recorded = {k: params[k] for k in built if k in params}
        if any(built[k] != v for k, v in recorded.items()):
            raise SppdetError(
                f"the model's proposals used edges {recorded}, but this machine builds "
                f"{ {k: built[k] for k in recorded} } (the structured edge model comes from "
                f"$SPPDET_EDGE_MODEL only): set it to the model's model.yml.gz or unset it to "
                f"match, or choose the proposals with --proposals METHOD / --preset")
    return MethodProposer(created)


class MethodProposer:
    """A proposal method as image -> boxes (N, 4); OpenCV on one thread, as in the worker
    processes of ``proposal_prefetch``, so that both give the same boxes."""

    def __init__(self, method: Any) -> None:
        self.method = method  # a proposals.ProposalMethod (picklable: workers get a copy)

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        from sppdet.proposal_prefetch import propose_serial

        return propose_serial(self.method, image_bgr)


def apply_preset(models: Sequence[DetectorModel], preset: str | None,
                 method: str | None = None) -> Proposer | None:
    """Run ``models`` at a preset's settings (``sppdet.presets``): their configs get the
    preset's scales (in place); returns the preset's proposer (``method`` overrides its
    proposal method), or None where the models' own proposal method applies."""
    from sppdet.presets import get_preset, preset_config

    p = get_preset(preset)
    for m in models:
        m.config = preset_config(m.config, p)
    method = method or p.method
    if method is None and p.max_boxes is None:
        return None
    return proposer_for(models[0].config.get("proposals", {}), method, p.max_boxes)


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
                   device: str | None = None, progress: bool = True, bbox_reg: bool = BBOX_REG,
                   preset: str | None = None, workers: int = PROPOSAL_WORKERS,
                   weights: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                   max_proposals: int | None = None, overlap: bool | None = None,
                   precision: str | None = None, **param_overrides: Any) -> Iterator[Detections]:
    """Detections for every image of ``dataset``, reusing proposal and feature caches if given.

    ``weights``: the backbone weights file of a model trained on ``extract --weights FILE``
    features (see ``Detector``).

    ``preset``: test-time settings (``sppdet.presets``). ``workers`` > 0: proposals not in
    the cache are computed by that many worker processes ahead of the conv passes (same
    detections as ``workers=0``, which computes them in this process: in a second thread
    beside the conv passes when ``overlap`` is True, or None and ``Detector.overlaps``).

    ``max_proposals``: score only the first that many proposals of each image (in the
    method's ranking, as cached), to measure what fewer windows cost.

    ``precision``: of the layers after the conv (default: the preset's; see ``Detector``).
    """
    from tqdm import tqdm

    if max_proposals is not None and max_proposals < 1:
        raise ArgumentError(f"max_proposals must be at least 1, got {max_proposals}")
    dirs = [model_dir] if isinstance(model_dir, (str, os.PathLike)) else list(model_dir)
    models = load_models(dirs)
    classes = getattr(dataset, "classes", None)
    if classes is not None and list(models[0].classes) != list(classes):
        raise ConfigMismatchError(f"{models[0].path}: the model's classes {models[0].classes} differ "
                                  f"from the data set's {list(classes)} (give the same --classes)")
    proposer = apply_preset(models, preset)
    params = DetectionParams.from_model(models[0], **param_overrides)
    detector = Detector(models, device, params, proposer=proposer, bbox_reg=bbox_reg, weights=weights,
                        overlap=overlap, precision=precision or get_preset(preset).precision)
    proposal_cache = feature_cache = None
    if proposals_dir is not None:
        from sppdet.features.proposal_files import ProposalFiles

        proposal_cache = ProposalFiles(proposals_dir)
    if features_dir is not None:
        from sppdet.features.cache import FeatureCache

        if preset not in (None, "model"):
            raise SppdetError(f"--preset {preset} computes its own conv maps; drop --features "
                              f"(the cache holds the model's own scales)")
        feature_cache = FeatureCache(features_dir)
        if len(detector.extractors) != 1:
            raise SppdetError("--features works with one feature configuration; "
                              "combined models with different backbones compute their own maps")
        key = next(iter(detector.extractors))
        # The cache must hold the maps the model was trained on (every feature setting).
        check_same(key.to_dict(), feature_cache.feature_config.to_dict(), f"feature cache {features_dir}")

    def items() -> Iterator[tuple[str, np.ndarray | None, bool]]:
        """(id, image or None when both caches hold the image, whether proposals are needed)."""
        for image_id in dataset.ids:
            propose = proposal_cache is None or not proposal_cache.has(image_id)
            need_image = propose or feature_cache is None or not feature_cache.has(image_id)
            yield image_id, dataset.load_image(image_id) if need_image else None, propose

    def stream() -> Iterator[tuple[str, np.ndarray | None, Callable[[], np.ndarray | None]]]:
        """(id, image, get computed proposals or None): ahead of time in workers if asked."""
        if workers > 0:
            from sppdet.proposal_prefetch import prefetch

            yield from prefetch(detector.proposal_method(), items(), workers)
            return
        if detector.overlaps:
            from sppdet.proposal_prefetch import prefetch_threaded

            yield from prefetch_threaded(detector.propose, items())
            return
        for image_id, image, propose in items():
            windows = detector.propose(image) if propose else None
            yield image_id, image, lambda w=windows: w

    for image_id, image, get_windows in tqdm(stream(), total=len(dataset.ids), desc="detect", unit="img",
                                             disable=not progress):
        if feature_cache is not None and feature_cache.has(image_id):
            maps = {key: feature_cache.load_maps(image_id, detector.device)}
            hw = maps[key].image_hw
        else:
            assert image is not None
            maps = detector.conv_maps(image)
            hw = image.shape[:2]
        windows = get_windows()
        if windows is None:
            assert proposal_cache is not None
            windows = proposal_cache.load(image_id, image_hw=(int(hw[0]), int(hw[1])))
        windows = np.asarray(windows, np.float64).reshape(-1, 4)[:max_proposals]
        yield detector.detect_windows(windows, maps,
                                      (int(hw[0]), int(hw[1])), image_id)

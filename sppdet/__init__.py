"""sppdet: SPP-net object detection (He et al., 2014) on modern PyTorch.

Pipeline: proposals -> conv maps once per image and scale -> spatial pyramid pooling
-> linear SVMs (+ box regression) -> NMS -> PASCAL VOC evaluation.

The Python API (names load lazily: ``import sppdet`` does not import torch)::

    import sppdet
    det = sppdet.Detector.load()          # the shipped model; or .load("models/fc7", device="cuda")
    result = det("photo.jpg")             # a path, a PIL image, or an RGB array (color="bgr" for OpenCV's)
    result.boxes, result.scores, result.labels, result.class_names
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use)
_EXPORTS: dict[str, str] = {
    "Detector": "sppdet.detector",
    "DetectionParams": "sppdet.detector",
    "DetectionResult": "sppdet.result",
    "Detection": "sppdet.result",
    "compute_proposals": "sppdet.pipeline.proposals",
    "extract_features": "sppdet.pipeline.extraction",
    "finetune": "sppdet.pipeline.training",
    "train_svm": "sppdet.pipeline.training",
    "evaluate": "sppdet.evaluation.pipeline",
    "save_display_thresholds": "sppdet.evaluation.pipeline",
    "load_model": "sppdet.heads.model_dir",
    "shipped_model_dir": "sppdet.models",
    "VOCDataset": "sppdet.data",
    "COCODataset": "sppdet.data",
    "SppdetError": "sppdet.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sppdet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

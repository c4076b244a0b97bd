"""Model directories shipped inside the package (trained here with sppdet's own commands)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sppdet.errors import ModelFormatError

DEFAULT_MODEL = "voc07_mobilenet_v2"  # conv fine-tuned through SPP, softmax + box deltas
SVM_MODEL = "voc07_mobilenet_v2_svm"  # the paper's recipe: fc7 SVMs + ridge box regression


def shipped_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The directory of a shipped model; ModelFormatError if this build has none."""
    path = Path(str(resources.files(__name__))) / name
    if not (path / "config.json").is_file():
        raise ModelFormatError(
            f"no shipped model {name!r} in this installation ({path}); give --model MODEL_DIR "
            "(train one with `sppdet train-svm`)")
    return path

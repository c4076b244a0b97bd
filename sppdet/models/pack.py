"""Pack a trained model directory for shipping: weight matrices in int8 or float16.

    sppdet pack SRC_MODEL_DIR DST_MODEL_DIR [--storage int8|float16]

The packed model loads like any other (``load_model`` reads every weight array back as
float32; see ``sppdet.heads.weight_storage``). int8 stores each row (an fc unit, a class)
with its own scale: a quarter of the float32 size. ``--fc6-rank T`` also stores fc6's
weights as a rank-T product, reconstructed when the model loads: a plain truncated SVD, or,
with ``--calibrate FEATURES PROPOSALS``, the product that best keeps fc6's outputs on a
sample of windows from those caches (``weight_storage.input_aware_factors``). Biases and box-target statistics stay
float32. ``docs/results.md`` reports the development mAP of the shipped, packed model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sppdet.errors import SppdetError
from sppdet.features.conv_top import TOP_FILE
from sppdet.heads.model_dir import CONFIG_FILE, HEADS_FILE, DetectorModel, fc_file, load_model, save_model
from sppdet.heads.sources import open_caches


def model_bytes(model_dir: Path) -> int:
    """Bytes on disk of a model's config, heads, fc layers and conv top."""
    files = (model_dir / CONFIG_FILE, model_dir / HEADS_FILE, fc_file(model_dir), model_dir / TOP_FILE)
    return sum(f.stat().st_size for f in files if f.is_file())


def sample_fc6_inputs(model: DetectorModel, features_dir: str | Path, proposals_dir: str | Path,
                      images: int = 300, windows: int = 100, seed: int = 0) -> np.ndarray:
    """fc6's inputs (scaled pooled features) for a seeded sample of proposal windows:
    ``windows`` from each of ``images`` images of the caches (the training caches)."""
    caches = open_caches(features_dir, proposals_dir)
    source = caches.features
    if model.conv_top is not None:  # fc6 reads pooled features of the conv top's output
        from sppdet.features.spp import DEFAULT_LEVELS
        from sppdet.heads.conv_finetune import ConvTopSource

        source = ConvTopSource(caches.features, model.conv_top,
                               levels=caches.features_manifest.get("levels", DEFAULT_LEVELS))
    ids = sorted(caches.features.image_ids())
    if not ids:
        raise SppdetError(f"{features_dir}: no images in the feature cache")
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(ids), size=min(images, len(ids)), replace=False)
    xs = []
    for i in np.sort(picked):
        boxes = np.asarray(caches.proposals.load(ids[i]), np.float64).reshape(-1, 4)
        if len(boxes):
            rows = np.sort(rng.choice(len(boxes), size=min(windows, len(boxes)), replace=False))
            xs.append(model.scaled(source.pooled(ids[i], boxes[rows])))
    if not xs:
        raise SppdetError(f"{proposals_dir}: no proposals to calibrate fc6 on")
    return np.concatenate(xs)


def pack_model(src: str | Path, dst: str | Path, storage: str = "int8", fc6_rank: int | None = None,
               calibration: tuple[str | Path, str | Path] | None = None) -> tuple[int, int]:
    """Write ``src``'s model into ``dst`` with its weight matrices stored as ``storage``
    (and fc6's at rank ``fc6_rank``, fitted to fc6's inputs on windows of the
    ``calibration`` caches (features, proposals) if given); returns the bytes on disk
    before and after."""
    src, dst = Path(src), Path(dst)
    model = load_model(src)
    if src.resolve() == dst.resolve():
        raise SppdetError(f"{dst}: pack into another directory than the source")
    if fc6_rank is not None and model.fc is None:
        raise SppdetError(f"{src}: --fc6-rank applies to softmax and fc7 models only (models with fc layers)")
    if calibration is not None and fc6_rank is None:
        raise SppdetError("calibration caches are only used with an fc6 rank")
    inputs = sample_fc6_inputs(model, *calibration) if calibration is not None else None
    save_model(dst, model, storage, fc6_rank, inputs)
    return model_bytes(src), model_bytes(dst)

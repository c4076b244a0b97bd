"""Train a conv fine-tuned model end to end and write its model directory.

``train_conv_model`` is what ``sppdet finetune --conv-top END`` runs: it opens the caches,
builds the conv top from the cache's backbone weights, trains it with fc6/fc7 through SPP
(``conv_finetune``), and writes a complete model (head ``softmax``: the network's own
classifier and box-delta output) plus ``finetune.json``, so ``sppdet train-svm --head fc7
--finetuned DIR`` can train the paper's SVMs on its fc7.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from sppdet.data import VOCDataset
from sppdet.features.conv_top import build_conv_top, check_top_fits_cache
from sppdet.features.spp import DEFAULT_LEVELS
from sppdet.heads.conv_finetune import ConvFinetuneParams, ConvFinetuner
from sppdet.heads.finetune import CHECKPOINT_EVERY
from sppdet.atomic_dir import atomic_directory
from sppdet.heads.model_dir import (FEATURE_KEYS, FINETUNE_FILE, TEST_DEFAULTS, DetectorModel,
                                    write_model)
from sppdet.fileio import save_json
from sppdet.heads.sources import DatasetImages, open_caches

CHECKPOINT = "conv_finetune.ckpt.npz"
# Test-time defaults of a softmax head: class probabilities, Fast R-CNN's NMS at 0.3; a low
# threshold keeps the ranked list long enough for AP; detections are shown above probability
# 0.5 until `eval --save-display-thresholds` stores per-class ones (sppdet.display).
SOFTMAX_TEST_DEFAULTS = {**TEST_DEFAULTS, "score_threshold": 0.001, "display_threshold": 0.5}


def train_conv_model(dataset: VOCDataset, features_dir: str | Path, proposals_dir: str | Path,
                     out_dir: str | Path, end: int, params: ConvFinetuneParams = ConvFinetuneParams(),
                     *, reduce: int | None = None, device: str = "cpu", checkpoint_every: int = CHECKPOINT_EVERY, progress: bool = True,
                     stop_after: int | None = None,
                     echo: Callable[[str], Any] = print) -> Path:
    """Fine-tune ``stages[cut:end]`` of the cache's backbone (plus a new 1x1 reduction to
    ``reduce`` channels if given) with new fc layers; write the model to ``out_dir``
    (resumes from its checkpoint there) and return the path."""
    out_dir = Path(out_dir)
    caches = open_caches(features_dir, proposals_dir)
    manifest = caches.features_manifest
    top = build_conv_top(str(manifest["backbone"]), end,
                         _weights_argument(str(manifest["weights"]), features_dir), reduce)
    check_top_fits_cache(top.config, manifest, str(features_dir))
    images = DatasetImages(dataset, caches.proposals)
    echo(f"{dataset.name}: {len(images)} images, {len(dataset.classes)} classes; conv top "
         f"{manifest['backbone']} stages[{top.config.start}:{top.config.end}] -> {top.channels} "
         f"channels at stride {top.stride} ({'fine-tuned' if params.train_top else 'frozen'})")
    trainer = ConvFinetuner(images, caches.features, top, len(dataset.classes), params, device,
                            manifest.get("levels", DEFAULT_LEVELS))
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / CHECKPOINT
    result = trainer.train(ckpt, checkpoint_every=checkpoint_every, stop_after=stop_after,
                           progress=progress)
    if stop_after is not None and result.summary["iterations"] < params.iterations:
        return out_dir
    features = {k: manifest[k] for k in FEATURE_KEYS if k in manifest}
    config = {**features, "head": "softmax", "classes": list(dataset.classes), "feature_scale": 1.0,
              "bbox_regression": True, "proposals": caches.proposals_meta,
              "features": manifest, "test": dict(SOFTMAX_TEST_DEFAULTS),
              "finetune": {"params": params.as_dict(), "summary": result.summary, "conv": True},
              "dataset": {"name": dataset.name, "split": dataset.split, "images": len(images)}}
    # The folder changes all at once; the checkpoint goes with the old folder, afterwards.
    with atomic_directory(out_dir, exclude={CHECKPOINT}) as tmp:
        write_model(tmp, DetectorModel(config, None, None, None, result.fc, conv_top=result.top))
        save_json(tmp / FINETUNE_FILE, {
            "classes": list(dataset.classes), "feature_scale": 1.0, "features": manifest,
            "proposals": caches.proposals_meta, "params": params.as_dict(), "summary": result.summary,
            "conv_top": result.top.config.as_dict(), "format_version": 2,
            "dataset": {"name": dataset.name, "split": dataset.split, "images": len(images)}})
    echo(f"{result.summary['iterations']} iterations in {result.summary['seconds']:.0f} s")
    return out_dir


def _weights_argument(recorded: str, features_dir: str | Path) -> str:
    """The ``get_backbone`` weights argument that reproduces a recorded weights identifier.

    Weights from a file (``extract --weights FILE``) are refused with a clear error: the
    conv top would need that file again, which ``finetune`` does not take yet."""
    from sppdet.errors import WeightsError
    from sppdet.features.backbones import recorded_file_weights

    if recorded.startswith("random"):
        return "random"
    if recorded_file_weights(recorded) is not None:
        raise WeightsError(
            f"{Path(features_dir) / 'manifest.json'}: the cache's backbone weights came from a file "
            f"({recorded}); conv fine-tuning (--conv-top) rebuilds the layers above the cache from "
            f"the backbone's weights and does not take a weights file: extract with torchvision or "
            f"random weights, or fine-tune the fc layers only (no --conv-top)")
    return recorded

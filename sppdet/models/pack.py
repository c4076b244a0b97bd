"""Pack a trained model directory for shipping: weights stored in float16, half the size.

    python -m sppdet.models.pack SRC_MODEL_DIR DST_MODEL_DIR

The packed model loads like any other (``load_model`` reads float16 arrays back as
float32). Rounding the weights to float16 moves scores by about 1e-3 of their scale;
``docs/results.md`` reports the development mAP of the shipped, packed model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from sppdet.errors import SppdetError
from sppdet.fileio import save_json, save_npz
from sppdet.heads.model_dir import CONFIG_FILE, FC_FILE, HEADS_FILE, load_model, save_fc

# Arrays kept in float32: small, and the SVM biases and box-target statistics are offsets
# that float16 would round coarsely.
_KEEP_FLOAT32 = ("svm_b", "bbox_b", "bbox_mean", "bbox_std")


def pack_model(src: str | Path, dst: str | Path) -> tuple[int, int]:
    """Write ``src``'s model into ``dst`` with its weight matrices in float16; returns the
    bytes on disk before and after."""
    src, dst = Path(src), Path(dst)
    model = load_model(src)
    if src.resolve() == dst.resolve():
        raise SppdetError(f"{dst}: pack into another directory than the source")
    dst.mkdir(parents=True, exist_ok=True)
    arrays = {"svm_W": model.svm_W, "svm_b": model.svm_b}
    if model.bbox is not None:
        arrays.update(bbox_W=model.bbox.W, bbox_b=model.bbox.b, bbox_mean=model.bbox.mean,
                      bbox_std=model.bbox.std)
    arrays = {k: np.asarray(v, np.float32 if k in _KEEP_FLOAT32 else np.float16) for k, v in arrays.items()}
    save_npz(dst / HEADS_FILE, **arrays)
    if model.fc is not None:
        save_fc(dst / FC_FILE, model.fc, dtype=torch.float16)
    save_json(dst / CONFIG_FILE, {**model.config, "weights_storage": "float16"})
    size = lambda d: sum((d / n).stat().st_size for n in (CONFIG_FILE, HEADS_FILE, FC_FILE) if (d / n).is_file())  # noqa: E731
    return size(src), size(dst)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    args = ap.parse_args(argv)
    try:
        before, after = pack_model(args.src, args.dst)
    except SppdetError as e:
        sys.exit(f"Error: {e}")
    print(f"{args.src} ({before / 2**20:.1f} MB) -> {args.dst} ({after / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()

"""Pack a trained model directory for shipping: weight matrices in int8 or float16.

    sppdet pack SRC_MODEL_DIR DST_MODEL_DIR [--storage int8|float16]
    python -m sppdet.models.pack SRC_MODEL_DIR DST_MODEL_DIR [--storage int8|float16]

The packed model loads like any other (``load_model`` reads every weight array back as
float32; see ``sppdet.heads.weight_storage``). int8 stores each row (an fc unit, a class)
with its own scale: a quarter of the float32 size. ``--fc6-rank T`` also stores fc6's
weights as a rank-T product (truncated SVD), reconstructed when the model loads. Biases and box-target statistics stay
float32. ``docs/results.md`` reports the development mAP of the shipped, packed model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sppdet.errors import SppdetError
from sppdet.heads.model_dir import CONFIG_FILE, FC_FILE, HEADS_FILE, fc_file, load_model, save_model


def model_bytes(model_dir: Path) -> int:
    """Bytes on disk of a model's config, heads and fc layers."""
    files = (model_dir / CONFIG_FILE, model_dir / HEADS_FILE, fc_file(model_dir))
    return sum(f.stat().st_size for f in files if f.is_file())


def pack_model(src: str | Path, dst: str | Path, storage: str = "int8",
               fc6_rank: int | None = None) -> tuple[int, int]:
    """Write ``src``'s model into ``dst`` with its weight matrices stored as ``storage``
    (and fc6's at rank ``fc6_rank``); returns the bytes on disk before and after."""
    src, dst = Path(src), Path(dst)
    model = load_model(src)
    if src.resolve() == dst.resolve():
        raise SppdetError(f"{dst}: pack into another directory than the source")
    if fc6_rank is not None and model.fc is None:
        raise SppdetError(f"{src}: --fc6-rank applies to head fc7 models only")
    save_model(dst, model, storage, fc6_rank)
    return model_bytes(src), model_bytes(dst)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--storage", choices=("int8", "float16"), default="int8")
    ap.add_argument("--fc6-rank", type=int, default=None)
    args = ap.parse_args(argv)
    try:
        before, after = pack_model(args.src, args.dst, args.storage, args.fc6_rank)
    except SppdetError as e:
        sys.exit(f"Error: {e}")
    print(f"{args.src} ({before / 2**20:.1f} MB) -> {args.dst} ({after / 2**20:.1f} MB, {args.storage})")


if __name__ == "__main__":
    main()

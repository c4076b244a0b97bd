"""Torch device choice, with a clear error where the device is missing."""

from __future__ import annotations

import torch

from sppdet.errors import SppdetError


def resolve_device(name: str | None = None) -> torch.device:
    """``None`` -> cuda when available, else cpu; "cpu", "cuda" or "cuda:N" otherwise."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise SppdetError(f"unknown device {name!r}: use cpu, cuda or cuda:N") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SppdetError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SppdetError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        raise SppdetError(f"unsupported device {name!r}: use cpu, cuda or cuda:N")
    return device


# Precisions of the fc layers, SVMs and box regression after the conv layers (--precision).
PRECISIONS = ("float32", "bfloat16")


def bf16_matmul_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 matrix products are native on ``device``: CUDA with bf16 support, or
    a CPU with AMX tiles or AVX-512 BF16 (elsewhere they are emulated, and slower)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(bool(check()) for check in checks if check is not None)


def scoring_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype for ``precision`` ("float32" or "bfloat16") on ``device``: bfloat16 only
    where it is native (``bf16_matmul_is_fast``), else float32."""
    if precision not in PRECISIONS:
        raise SppdetError(f"unknown precision {precision!r}: use {' or '.join(PRECISIONS)}")
    if precision == "bfloat16" and bf16_matmul_is_fast(device):
        return torch.bfloat16
    return torch.float32

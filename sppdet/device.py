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

"""Stride and centre offset of a conv trunk, derived from its layers.

A feature-map cell j of a chain of conv / pooling layers is centred, in input pixel
indices (0-based), at ``stride * j + offset``. For one layer with kernel k, stride s and
padding p, output cell j covers input cells [s j - p, s j - p + k - 1], so its centre is
``s j + (k - 1) / 2 - p``. Composing layers, each layer l adds ``S_{l-1} ((k_l - 1) / 2 - p_l)``
to the offset, with S_{l-1} the product of the strides before it. Layers padded by
floor(k / 2) with odd k add nothing: the paper's appendix assumption (offset 0).

Residual shortcuts (torchvision's ``downsample`` branches) run parallel to the main path
with the same stride and centre, so the walk skips them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sppdet.errors import ArgumentError

_SKIPPED_BRANCHES = ("downsample",)


@dataclass(frozen=True)
class Geometry:
    """Total stride and offset (input pixels) of cell 0's receptive-field centre."""

    stride: int
    offset: float


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _main_path_layers(module: nn.Module) -> list[nn.Module]:
    """Spatial layers (conv / pool) in forward order, shortcut branches excluded."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return [module]
    layers: list[nn.Module] = []
    for name, child in module.named_children():
        if name in _SKIPPED_BRANCHES:
            continue
        layers.extend(_main_path_layers(child))
    return layers


def derive_geometry(trunk: nn.Module) -> Geometry:
    """Walk the trunk's conv / pool layers and return its stride and centre offset.

    Raises ValueError for layers the walk cannot reason about (dilation, unequal
    horizontal and vertical geometry, ceil-mode pooling).
    """
    stride = 1
    offset = 0.0
    for layer in _main_path_layers(trunk):
        if isinstance(layer.padding, str):
            raise ArgumentError(f"cannot derive the geometry of {layer}: string padding")
        k, s, p = _pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding)
        dilation = _pair(getattr(layer, "dilation", 1))
        if k[0] != k[1] or s[0] != s[1] or p[0] != p[1] or dilation != (1, 1):
            raise ArgumentError(f"cannot derive the geometry of {layer}: non-square or dilated")
        if getattr(layer, "ceil_mode", False):
            raise ArgumentError(f"cannot derive the geometry of {layer}: ceil_mode")
        offset += stride * ((k[0] - 1) / 2.0 - p[0])
        stride *= s[0]
    return Geometry(stride=stride, offset=offset)

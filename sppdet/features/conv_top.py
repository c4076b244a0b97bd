"""The conv layers above the cached trunk ("conv top"), fine-tuned through SPP.

SPP-net never trains the layers below the pyramid pooling. Here the backbone is split in
two: the lower part (``stages[:cut_at]``, e.g. MobileNetV2 blocks 0-13) stays frozen and
its maps are cached once by ``sppdet extract``; the upper part (``stages[cut_at:end]``,
e.g. blocks 14-17, 320 channels at stride 32) is a ``ConvTop`` that runs on the cached
maps, is trained together with fc6/fc7 through the pyramid pooling (gradients flow through
each bin's max), and is stored in the model directory (``conv_top.npz``). The cache does
not depend on the fine-tuned weights, so one cache serves every model trained on it.

Batch norm is folded into the convolutions (frozen statistics, as torchvision's detection
models freeze it), so training and inference run the same layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sppdet.errors import ConfigMismatchError, ModelFormatError, SppdetError
from sppdet.features.backbones import backbone_spec, build_network, fold_batchnorm
from sppdet.features.extractor import FeatureMaps
from sppdet.features.geometry import derive_geometry
from sppdet.fileio import save_npz
from sppdet.perf import channels_last_batch, onednn_convs

TOP_FILE = "conv_top.npz"


@dataclass(frozen=True)
class ConvTopConfig:
    """Which layers a conv top holds and the geometry of its output map.

    ``start`` is the backbone's cut (the cached layer), ``end`` the end of the slice
    ``stages[start:end]``; ``stride`` and ``offset`` describe the whole network up to
    ``end`` (``geometry.derive_geometry``), which is what windows are mapped with.
    """

    backbone: str
    start: int
    end: int
    in_channels: int
    channels: int
    stride: int
    offset: float
    init_weights: str  # the weights the layers started from (the cache's backbone weights)
    reduce: int | None = None  # a new 1x1 conv to this many channels after the blocks (or none)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.reduce is None:
            d.pop("reduce")  # configs of models without it stay as they were
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> "ConvTopConfig":
        try:
            return cls(backbone=str(d["backbone"]), start=int(d["start"]), end=int(d["end"]),
                       in_channels=int(d["in_channels"]), channels=int(d["channels"]),
                       stride=int(d["stride"]), offset=float(d["offset"]),
                       init_weights=str(d["init_weights"]),
                       reduce=None if d.get("reduce") is None else int(d["reduce"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFormatError(f"{where}: invalid conv_top entry ({e!r})") from None


def _top_layers(backbone: str, end: int, model: nn.Module) -> tuple[nn.Sequential, int]:
    spec = backbone_spec(backbone)
    stages = spec.stages(model)
    if not spec.cut_at < end <= len(stages):
        raise SppdetError(f"conv top of {backbone}: end must be in {spec.cut_at + 1}..{len(stages)} "
                          f"(the layers above the cached one, stages[{spec.cut_at}:]), got {end}")
    return stages[spec.cut_at:end], spec.cut_at


class ConvTop(nn.Module):
    """``stages[start:end]`` of a backbone (batch norm folded), on cached maps."""

    def __init__(self, config: ConvTopConfig, layers: nn.Sequential) -> None:
        super().__init__()
        self.config = config
        self.layers = layers

    @property
    def stride(self) -> int:
        return self.config.stride

    @property
    def offset(self) -> float:
        return self.config.offset

    @property
    def channels(self) -> int:
        return self.config.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def apply_to_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """One cached (C, H, W) map (any float dtype) -> the top's (C', H', W') float32 map."""
        return self.layers(channels_last_batch(fmap))[0]

    @torch.no_grad()
    def apply_to_maps(self, maps: FeatureMaps) -> FeatureMaps:
        """Every scale's cached map through the top (inference, float32 maps)."""
        return FeatureMaps([self.apply_to_map(m) for m in maps.maps], maps.factors, maps.image_hw,
                           maps.scales)

    def save(self, path: str | Path, storage: str = "float32") -> None:
        """Atomically write the layers' state dict (``.npz``, no pickle): float32, or, for a
        packed model (``storage`` float16 or int8), conv weights in float16 (biases float32)."""
        from sppdet.heads.weight_storage import encode

        arrays = {k: v.detach().cpu().float().numpy() for k, v in self.layers.state_dict().items()}
        save_npz(path, **encode(arrays, "float32" if storage == "float32" else "float16"))


def _with_reduce(layers: nn.Sequential, channels: int, reduce: int | None) -> nn.Sequential:
    """Append the optional 1x1 channel reduction (seeded init) as layer ``reduce``."""
    if reduce is None:
        return layers
    if not 0 < reduce:
        raise SppdetError(f"conv top: reduce must be a positive number of channels, got {reduce}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        conv = nn.Conv2d(channels, reduce, 1)
    layers.add_module("reduce", conv)
    return onednn_convs(layers)


def build_conv_top(backbone: str, end: int, weights: str | None = None,
                   reduce: int | None = None) -> ConvTop:
    """The layers ``stages[cut_at:end]`` of ``backbone`` with ``weights`` loaded (as for the
    trunk: torchvision's weights API, ``"random"`` or a file), batch norm folded; with
    ``reduce``, a new 1x1 convolution to that many channels after them (a smaller pooled
    feature: fc6's cost is proportional to it)."""
    spec, model, ident = build_network(backbone, weights)
    layers, start = _top_layers(backbone, end, model)
    geometry = derive_geometry(spec.stages(model)[:end])
    layers = onednn_convs(fold_batchnorm(layers.eval()))
    with torch.no_grad():
        block_channels = int(layers(torch.zeros(1, spec.channels, 64, 64)).shape[1])
    layers = _with_reduce(layers, block_channels, reduce)
    channels = block_channels if reduce is None else int(reduce)
    config = ConvTopConfig(backbone, start, end, spec.channels, channels, geometry.stride,
                           geometry.offset, ident, reduce)
    top = ConvTop(config, layers)
    for p in top.parameters():
        p.requires_grad_(False)
    return top


def load_conv_top(path: str | Path, config: ConvTopConfig) -> ConvTop:
    """Rebuild a saved conv top: the architecture from ``config`` (no weights download),
    the parameters from ``path`` (written by ``ConvTop.save``)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: conv top weights missing")
    spec = backbone_spec(config.backbone)
    with torch.random.fork_rng(devices=[]):
        model = spec.build()
    layers, start = _top_layers(config.backbone, config.end, model)
    if start != config.start:
        raise ConfigMismatchError(f"{path}: conv top starts at layer {config.start}, but "
                                  f"{config.backbone}'s cached trunk ends at {start}")
    layers = onednn_convs(fold_batchnorm(layers.eval()))
    if config.reduce is not None:
        with torch.no_grad():
            block_channels = int(layers(torch.zeros(1, config.in_channels, 64, 64)).shape[1])
        layers = _with_reduce(layers, block_channels, config.reduce)
    from sppdet.heads.weight_storage import read_npz

    try:
        state = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in read_npz(path).items()}
        layers.load_state_dict(state)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ModelFormatError(f"{path}: not the conv top its config describes ({e})") from None
    top = ConvTop(config, layers).eval()
    for p in top.parameters():
        p.requires_grad_(False)
    return top


def check_top_fits_cache(config: ConvTopConfig, features: dict[str, Any], where: str) -> None:
    """Refuse a feature cache whose maps are not the conv top's input (other backbone,
    other weights, or another cut)."""
    expected = {"backbone": config.backbone, "weights": config.init_weights, "channels": config.in_channels}
    diffs = [f"{k}: cache has {features.get(k)!r}, the conv top needs {v!r}"
             for k, v in expected.items() if features.get(k) != v]
    if diffs:
        raise ConfigMismatchError(f"{where}: the feature cache does not hold this conv top's input "
                                  f"maps ({'; '.join(diffs)})")

"""Backbone registry: the conv trunk that SPP pools from, with its geometry.

Each entry names a network, the layer it is cut at, and how to build it. Stride and
centre offset are derived from the trunk's layers (``geometry.derive_geometry``), never
typed in. Adding a backbone is one ``BackboneSpec`` in ``BACKBONES``.

Weights (``get_backbone(name, weights)``):
- ``None``: the backbone's default torchvision weights (ImageNet), through torchvision's
  weights API; the file is looked up in ``$TORCH_HOME/hub/checkpoints`` and downloaded
  when missing (an ``SppdetError`` says so when that is impossible).
- a torchvision weights name such as ``"IMAGENET1K_V1"``;
- ``"random"`` / ``"none"``: random initialisation with a fixed seed, so two runs give the
  same network (and a cache built with it stays valid);
- a path to a ``.pth`` / ``.pt`` state dict, of the whole model or of the trunk.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock, Bottleneck

from sppdet.errors import SppdetError, WeightsError
from sppdet.features.geometry import derive_geometry
from sppdet.perf import onednn_convs

RANDOM_WEIGHTS = "random"
RANDOM_SEED = 0


def _zf5() -> nn.Module:
    """ZF-5 (Zeiler & Fergus 2014, as in the SPP-net paper's Table 1), cut at conv5.

    conv1 96x7x7/2, LRN, pool 3x3/2; conv2 256x5x5/2, LRN, pool 3x3/2; conv3 384x3x3;
    conv4 384x3x3; conv5 256x3x3. Every layer is padded by floor(p/2), the paper's
    appendix assumption, so its centre offset is 0 and its stride 16.
    """

    def lrn() -> nn.Module:
        return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)

    return nn.Sequential(
        nn.Conv2d(3, 96, 7, stride=2, padding=3), nn.ReLU(inplace=True), lrn(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(96, 256, 5, stride=2, padding=2), nn.ReLU(inplace=True), lrn(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
    )


def _resnet_stages(model: nn.Module) -> nn.Sequential:
    m = model
    return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and where to cut it."""

    name: str
    layer: str  # the pooled layer, as a readable description
    channels: int
    build: Callable[[], nn.Module]  # the whole network, random init
    stages: Callable[[nn.Module], nn.Sequential]  # whole network -> its conv layers in order
    cut_at: int  # the trunk is stages[:cut_at]; layers above it can be fine-tuned (conv_top)
    torchvision_name: str | None = None  # for torchvision's weights API
    default_weights: str = RANDOM_WEIGHTS

    def cut(self, model: nn.Module) -> nn.Module:
        """Whole network -> the conv trunk whose output is cached (``stages[:cut_at]``)."""
        return self.stages(model)[: self.cut_at]


def _tv(name: str) -> Callable[[], nn.Module]:
    return lambda: torchvision.models.get_model(name, weights=None)


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("mobilenet_v2", "features[:14] (block 13, stride 16)", 96,
                     _tv("mobilenet_v2"), lambda m: m.features, 14, "mobilenet_v2", "IMAGENET1K_V1"),
        BackboneSpec("alexnet", "features[:12] (conv5 + ReLU)", 256,
                     _tv("alexnet"), lambda m: m.features, 12, "alexnet", "IMAGENET1K_V1"),
        BackboneSpec("vgg16", "features[:30] (conv5_3 + ReLU)", 512,
                     _tv("vgg16"), lambda m: m.features, 30, "vgg16", "IMAGENET1K_V1"),
        BackboneSpec("resnet50", "layer3 (C4)", 1024,
                     _tv("resnet50"), _resnet_stages, 7, "resnet50", "IMAGENET1K_V1"),
        BackboneSpec("zf5", "conv5 + ReLU", 256, _zf5, lambda m: m, 14),
    )
}
DEFAULT_BACKBONE = "mobilenet_v2"


class Backbone(nn.Module):
    """A conv trunk (image batch -> feature map) with the geometry the mapping needs."""

    def __init__(self, name: str, trunk: nn.Module, layer: str, channels: int, weights: str):
        super().__init__()
        self.name = name
        self.trunk = trunk
        self.layer = layer
        self.channels = channels
        self.weights = weights  # identifier recorded in caches and models
        geometry = derive_geometry(trunk)
        self.stride: int = geometry.stride
        self.offset: float = geometry.offset

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)

    def describe(self) -> dict:
        """The configuration a cache or a model records."""
        return {"backbone": self.name, "weights": self.weights, "layer": self.layer,
                "channels": self.channels, "stride": self.stride, "offset": self.offset}


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d into the Conv2d just before it (in place).

    Only inside containers whose forward applies children in registration order
    (nn.Sequential, torchvision's ResNet blocks). Same outputs up to float rounding, one
    pass over the activations fewer per layer: about 1.3x faster on the CPU.
    """
    for child in module.children():
        fold_batchnorm(child)
    if isinstance(module, (nn.Sequential, BasicBlock, Bottleneck)):
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                module._modules[b] = nn.Identity()
    return module


def backbone_names() -> list[str]:
    return list(BACKBONES)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


FILE_PREFIX = "file:"
DIGEST_MARK = "#sha256:"


def weights_file_ident(path: str | os.PathLike) -> str:
    """The identifier a cache or model records for backbone weights read from ``path``:
    ``file:NAME#sha256:DIGEST`` (the first 16 hex digits of the file's sha256)."""
    path = Path(path)
    return f"{FILE_PREFIX}{path.name}{DIGEST_MARK}{_file_sha256(path)[:16]}"


def recorded_file_weights(recorded: str) -> tuple[str, str] | None:
    """(file name, sha256 prefix) of a recorded ``file:NAME#sha256:DIGEST`` identifier, or
    None for weights that do not come from a file (torchvision names, random)."""
    if not recorded.startswith(FILE_PREFIX):
        return None
    name, mark, digest = recorded[len(FILE_PREFIX):].rpartition(DIGEST_MARK)
    if not mark or not digest:
        return recorded[len(FILE_PREFIX):], ""
    return name, digest


def resolve_recorded_weights(recorded: str, files: Sequence[str | os.PathLike], where: str,
                             digests: dict[Path, str] | None = None) -> str:
    """The ``get_backbone`` weights argument that reproduces the ``recorded`` identifier of
    a cache or model (``where`` names it in errors).

    Random weights are rebuilt from their seed and torchvision names are looked up as usual.
    Weights that came from a file (``sppdet extract --weights FILE``) need that file again:
    it is taken from ``files`` (the user's ``--weights``), the one whose sha256 matches the
    recorded digest (its name may differ). ``digests`` caches the files' digests.

    Raises:
        WeightsError: the recorded weights came from a file and none of ``files`` is it.
    """
    import re

    from sppdet.features.config import WEIGHTS_DESCRIPTION, WEIGHTS_PATTERN

    if not re.fullmatch(WEIGHTS_PATTERN, recorded):  # e.g. a path: never read from a record
        raise WeightsError(f"{where}: recorded weights {recorded!r} must be {WEIGHTS_DESCRIPTION}")
    if recorded.startswith(RANDOM_WEIGHTS):
        return RANDOM_WEIGHTS
    wanted = recorded_file_weights(recorded)
    if wanted is None:
        return recorded
    name, digest = wanted
    if not files:
        raise WeightsError(
            f"{where}: its backbone weights came from the file {name} (recorded as {recorded}); "
            f"give that file again with --weights FILE (Python: weights=FILE)")
    digests = {} if digests is None else digests
    seen = []
    for f in files:
        path = Path(f)
        if path not in digests:
            if not path.is_file():
                raise WeightsError(f"{path}: weights file not found (--weights)")
            digests[path] = _file_sha256(path)[:16]
        if digest and digests[path] == digest:
            return str(path)
        seen.append(f"{path} has sha256 {digests[path]}")
    raise WeightsError(
        f"{where}: its backbone weights came from {name} with sha256 {digest or '(not recorded)'}, "
        f"but {'; '.join(seen)}: not the weights the model was trained with "
        f"(give the file `sppdet extract --weights` read)")


def _load_file(spec: BackboneSpec, model: nn.Module, path: Path) -> None:
    """Load a state dict of the whole model or of the trunk from ``path``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise SppdetError(f"cannot read weights file {path}: it holds objects other than tensors, "
                          f"which are not read (unpickling can run code)") from None
    except Exception as e:  # unpickling errors come in many types
        raise SppdetError(f"cannot read weights file {path}: {e}") from e
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict):
        raise SppdetError(f"weights file {path} holds no state dict")
    trunk = spec.cut(model)
    for target in (model, trunk):
        expected = set(target.state_dict())
        if expected <= set(state):
            try:
                target.load_state_dict({k: state[k] for k in expected})
            except RuntimeError as e:
                raise SppdetError(f"weights file {path} does not fit {spec.name}: {e}") from e
            return
    missing = sorted(set(trunk.state_dict()) - set(state))[:3]
    raise SppdetError(f"weights file {path} does not fit {spec.name}: missing keys such as {missing}")


def _load_torchvision(spec: BackboneSpec, model: nn.Module, name: str) -> str:
    """Load torchvision's named weights through its weights API (cache, then download)."""
    if spec.torchvision_name is None:
        raise SppdetError(f"{spec.name} has no torchvision weights; use --weights random or a weights file")
    enum = torchvision.models.get_model_weights(spec.torchvision_name)
    try:
        entry = enum.verify(name)
    except (ValueError, KeyError) as e:
        choices = ", ".join(w.name for w in enum)
        raise SppdetError(f"unknown weights {name!r} for {spec.name} (torchvision has: {choices}; "
                          f"or give 'random' or a .pth file)") from e
    try:
        state = entry.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # URLError, OSError, hash mismatch, ...
        raise SppdetError(
            f"cannot load {spec.name} weights {entry.name}: not in the torch cache "
            f"({torch.hub.get_dir()}/checkpoints) and download failed ({e}); set TORCH_HOME to "
            f"where the file is, or use --weights random or --weights FILE.pth") from e
    model.load_state_dict(state)
    return entry.name


def backbone_spec(name: str) -> BackboneSpec:
    """The registry entry of ``name`` (an ``SppdetError`` names the choices otherwise)."""
    spec = BACKBONES.get(name)
    if spec is None:
        raise SppdetError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return spec


def build_network(name: str, weights: str | None = None) -> tuple[BackboneSpec, nn.Module, str]:
    """The whole registered network with its weights loaded, and the weights' identifier.

    ``weights`` as in ``get_backbone``; random weights use a fixed seed.
    """
    spec = backbone_spec(name)
    weights = spec.default_weights if weights is None else weights
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = spec.build()
    if weights.lower() in (RANDOM_WEIGHTS, "none"):
        ident = f"{RANDOM_WEIGHTS}(seed={RANDOM_SEED})"
    elif Path(weights).suffix in (".pth", ".pt") or Path(weights).is_file():
        path = Path(weights)
        if not path.is_file():
            raise SppdetError(f"weights file {path} not found")
        _load_file(spec, model, path)
        ident = weights_file_ident(path)
    else:
        ident = _load_torchvision(spec, model, weights)
    return spec, model, ident


def get_backbone(name: str = DEFAULT_BACKBONE, weights: str | None = None) -> Backbone:
    """Build a registered backbone, load its weights, and return it in eval mode."""
    spec, model, ident = build_network(name, weights)
    trunk = onednn_convs(fold_batchnorm(spec.cut(model).eval()))
    backbone = Backbone(spec.name, trunk, spec.layer, spec.channels, ident)
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone

"""Speed settings for the CPU: the glibc allocator (process-level, applied by the
commands), oneDNN for 1x1 convolutions and convolutions fused with their ReLU / ReLU6
(``onednn_convs``, applied to every backbone and conv top), and the cores this process may
use."""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_tuned = False


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def tune_allocator(mmap_threshold: int = 1 << 30) -> bool:
    """Let glibc serve and keep large blocks in the heap instead of mmap / munmap.

    By default every tensor over about 32 MB is mmapped and unmapped on free, so each new
    one is page-faulted in again: writing a fresh (2000, 4800) float32 feature matrix took
    36 ms instead of 2.5 ms, and a MobileNetV2 forward pass at 688 px 0.53 s instead of
    0.31 s (one thread, measured on the development machine). Freed memory stays with the
    process (resident size does not shrink). Returns False where it does not apply (not
    Linux/glibc); idempotent. The commands that run the network or load cached features
    (detect, eval --model, extract, finetune, train-svm) apply it; a library caller decides
    for its own process. MobileNetV2 at 688 on two threads, in the detector: 79 ms without it,
    67 ms with it (session 9). With transparent huge pages as well (below), the fast preset's
    pooling took 3.8 ms instead of 4.3-4.6 and its scoring 7-8 ms instead of 9 (session 10).
    """
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    # Transparent huge pages for torch's CPU buffers of 2 MB and more (madvise): fewer TLB
    # misses in the copies after the conv. torch reads the variable at its first CPU
    # allocation, so it applies when this runs before any tensor exists (the commands call
    # it first); THP_MEM_ALLOC_ENABLE=0 in the environment keeps it off.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold)))
        ok = bool(libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1))) and ok
    except (OSError, AttributeError):
        return False
    _tuned = ok
    return ok


def channels_last_batch(fmap: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A (C, H, W) map as a batch of one (1, C, H, W) in dense channels-last memory, ``dtype``.

    ``fmap.unsqueeze(0).contiguous(memory_format=torch.channels_last)`` is not enough: a
    channels-last map gets a batch stride of C, which ``contiguous`` accepts (the batch has
    one image) but which sends the depthwise convolution to its NCHW kernel; everything after
    it then runs in NCHW, 1.36x slower here for the shipped conv top
    (``docs/benchmarks.md``, session 8; tested in
    ``tests/features/test_pointwise_conv.py``), and its output needs a transpose before pooling.
    """
    c, h, w = fmap.shape
    out = torch.empty((1, c, h, w), dtype=dtype, device=fmap.device, memory_format=torch.channels_last)
    return out.copy_(fmap.unsqueeze(0))


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution that runs through oneDNN on the CPU at any batch size.

    PyTorch sends a 1x1 convolution with one image and one thread to its reference
    ("THNN") kernel, which converts channels-last input and is about 1.4x slower per pixel
    here than oneDNN (``docs/benchmarks.md``); batches of 16 or more, and several threads,
    already get oneDNN. Same parameters and results (to float rounding) as ``nn.Conv2d``;
    anything else (CUDA, autograd, other dtypes) takes the ordinary path.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _onednn_applies(self, x):
            return torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, self.padding,
                                                     self.stride, self.dilation, self.groups)
        return super().forward(x)


def _is_pointwise(m: nn.Conv2d) -> bool:
    """A plain 1x1, stride-1 convolution (no padding or dilation)."""
    return (m.kernel_size == (1, 1) and m.stride == (1, 1) and m.dilation == (1, 1) and m.padding == (0, 0)
            and m.padding_mode == "zeros")


def onednn_pointwise(module: nn.Module) -> nn.Module:
    """Turn every plain 1x1, stride-1 ``nn.Conv2d`` in ``module`` into a
    :class:`PointwiseConv2d` (in place; parameters and state-dict keys unchanged)."""
    for m in module.modules():
        if type(m) is nn.Conv2d and _is_pointwise(m):
            m.__class__ = PointwiseConv2d
    return module


def _onednn_applies(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether ``conv`` on ``x`` can take a oneDNN call: CPU, float32, no autograd."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and conv.weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad))
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


@functools.lru_cache(maxsize=1)
def _fused_conv_op() -> Callable[..., torch.Tensor] | None:
    """oneDNN's convolution with a fused elementwise post-op (the op PyTorch's compiler
    uses, not a public API), or None in a build without it or where it does not give the
    convolution-then-activation result on a small probe (checked once per process)."""
    try:
        op = torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None
    return op if _fused_op_works(op) else None


def _fused_op_works(op: Callable[..., torch.Tensor]) -> bool:
    """Whether ``op`` computes hardtanh(conv2d(x)) and relu(conv2d(x)) on fixed small inputs
    (no random numbers: the caller's random state is left alone)."""
    x = torch.linspace(-3, 3, 2 * 4 * 6 * 5).reshape(2, 4, 6, 5)
    w = torch.linspace(-1, 1, 3 * 4 * 3 * 3).reshape(3, 4, 3, 3).flip(0)
    b = torch.tensor([0.5, -0.25, 0.0])
    try:
        with torch.no_grad():
            conv = F.conv2d(x, w, b, 1, 1)
            ok = [torch.allclose(op(x, w, b, [1, 1], [1, 1], [1, 1], 1, name, scalars, ""), want, atol=1e-5)
                  for name, scalars, want in (("hardtanh", [0.0, 6.0], F.hardtanh(conv, 0.0, 6.0)),
                                              ("relu", [], F.relu(conv)))]
    except (RuntimeError, TypeError, ValueError):
        return False
    return all(ok)


class ConvActivation2d(nn.Conv2d):
    """A convolution and the ReLU or hardtanh (ReLU6) after it, as one oneDNN call on the
    CPU: the activation is applied to each output tile while it is in cache, instead of a
    second pass over the whole output. MobileNetV2's conv layers at 688 px: 1.14x faster on
    one thread, 1.12x on two, bit-identical output (``docs/benchmarks.md``, session 9).
    Anything else (CUDA, autograd, other dtypes) runs the convolution, then the activation.
    ``post_op`` is oneDNN's name ("relu", "hardtanh"), ``post_scalars`` its bounds."""

    post_op: str = "relu"
    post_scalars: tuple[float, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        onednn = _onednn_applies(self, x)
        fused = _fused_conv_op() if onednn else None
        if fused is not None:
            return fused(x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
                         self.post_op, list(self.post_scalars), "")
        if onednn and _is_pointwise(self):  # as PointwiseConv2d does
            y = torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride,
                                                  self.dilation, self.groups)
        else:
            y = super().forward(x)
        # In place, as torchvision's activations: the convolution's output is not needed again.
        return F.relu_(y) if self.post_op == "relu" else F.hardtanh_(y, *self.post_scalars)


def _post_op(module: nn.Module) -> tuple[str, tuple[float, ...]] | None:
    """oneDNN's post-op for an activation module (None if it has none here)."""
    if type(module) is nn.ReLU:
        return "relu", ()
    if isinstance(module, nn.Hardtanh):  # ReLU6 is hardtanh(0, 6)
        return "hardtanh", (float(module.min_val), float(module.max_val))
    return None


def fuse_conv_activations(module: nn.Module) -> nn.Module:
    """In every ``nn.Sequential`` of ``module``, turn a convolution followed (past any
    ``nn.Identity``, e.g. a folded batch norm) by a ReLU or hardtanh into a
    :class:`ConvActivation2d`, and that activation into ``nn.Identity`` (in place;
    parameters and state-dict keys unchanged). Only Sequentials: their forward applies the
    children in order, so the activation belongs to that convolution alone."""
    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for i, name in enumerate(names):
            conv = seq._modules[name]
            if (type(conv) not in (nn.Conv2d, PointwiseConv2d) or conv.padding_mode != "zeros"
                    or isinstance(conv.padding, str)):
                continue
            j = i + 1
            while j < len(names) and isinstance(seq._modules[names[j]], nn.Identity):
                j += 1
            post = _post_op(seq._modules[names[j]]) if j < len(names) else None
            if post is None:
                continue
            conv.__class__ = ConvActivation2d
            conv.post_op, conv.post_scalars = post
            seq._modules[names[j]] = nn.Identity()
    return module


def onednn_convs(module: nn.Module) -> nn.Module:
    """Both speed-ups for inference on the CPU, in place: 1x1 convolutions through oneDNN
    (``onednn_pointwise``) and convolutions fused with their activation
    (``fuse_conv_activations``). Same parameters; same results (to float rounding)."""
    return fuse_conv_activations(onednn_pointwise(module))

"""1x1 convolutions through oneDNN, and convolutions fused with their activation
(sppdet.perf), give nn.Conv2d's results."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sppdet.perf import (ConvActivation2d, PointwiseConv2d, channels_last_batch, fuse_conv_activations,
                         onednn_pointwise)


@pytest.mark.parametrize("batch,channels_last,bias", [(1, True, True), (1, False, False), (3, True, False)])
def test_pointwise_matches_conv2d(batch, channels_last, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(24, 40, 1, bias=bias)
    fast = onednn_pointwise(copy.deepcopy(conv))
    assert type(fast) is PointwiseConv2d
    x = torch.randn(batch, 24, 13, 17)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), conv(x), rtol=1e-5, atol=1e-5)
    # With autograd the ordinary path runs, and gradients flow.
    fast.weight.requires_grad_(True)
    fast(x).sum().backward()
    assert fast.weight.grad is not None and fast.weight.grad.shape == fast.weight.shape


def test_only_plain_1x1_stride_1_convolutions_are_swapped():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1, stride=2),
                        nn.Conv2d(8, 8, 1, padding=1), nn.Conv2d(8, 8, 1, groups=2))
    onednn_pointwise(net)
    assert [type(m) is PointwiseConv2d for m in net] == [False, True, False, False, True]
    keys = set(net.state_dict())
    assert keys == {f"{i}.{p}" for i in range(5) for p in ("weight", "bias")}


def test_backbone_output_unchanged_by_the_swaps(monkeypatch):
    """The backbone with oneDNN 1x1 convolutions and fused activations equals the same
    weights run as plain Conv2d, batch-norm-folded, then ReLU6 modules."""
    from sppdet.features import backbones

    torch.manual_seed(0)
    backbone = backbones.get_backbone("mobilenet_v2", "random")
    assert any(type(m) is PointwiseConv2d for m in backbone.modules())
    assert sum(type(m) is ConvActivation2d for m in backbone.modules()) == 26
    assert not any(isinstance(m, nn.ReLU6) for m in backbone.modules())
    monkeypatch.setattr(backbones, "onednn_convs", lambda module: module)
    torch.manual_seed(0)
    plain = backbones.get_backbone("mobilenet_v2", "random")
    assert sum(isinstance(m, nn.ReLU6) for m in plain.modules()) == 26
    x = torch.randn(1, 3, 96, 128).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(backbone(x), plain(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("activation", [nn.ReLU(inplace=True), nn.ReLU6(), nn.Hardtanh(-1.0, 2.0)])
@pytest.mark.parametrize("batch, channels_last, stride, groups, bias",
                         [(1, True, 1, 1, True), (1, True, 2, 16, True), (1, False, 2, 1, False),
                          (3, True, 1, 4, True)])
def test_fused_activation_matches_conv_then_activation(activation, batch, channels_last, stride, groups, bias):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(16, 32, 3, stride=stride, padding=1, groups=groups, bias=bias), nn.Identity(),
                        copy.deepcopy(activation))
    fused = fuse_conv_activations(copy.deepcopy(net))
    assert type(fused[0]) is ConvActivation2d and isinstance(fused[2], nn.Identity)
    x = torch.randn(batch, 16, 15, 22) * 3
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), net(x.clone()), rtol=1e-5, atol=1e-5)
    # With autograd the convolution and the activation run one after the other: same gradients.
    xg, xf = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    net(xg).sum().backward()
    fused(xf).sum().backward()
    torch.testing.assert_close(xf.grad, xg.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused[0].weight.grad, net[0].weight.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel", [1, 3])
def test_without_the_fused_op_the_convolution_and_activation_run_in_turn(kernel, monkeypatch):
    """A build without oneDNN's fused op: the same results, 1x1 still through oneDNN."""
    import sppdet.perf

    monkeypatch.setattr(sppdet.perf, "_fused_conv_op", lambda: None)
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(8, 12, kernel, padding=kernel // 2), nn.ReLU6())
    fused = fuse_conv_activations(onednn_pointwise(copy.deepcopy(net)))
    assert type(fused[0]) is ConvActivation2d
    x = (torch.randn(1, 8, 9, 10) * 4).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), net(x), rtol=1e-5, atol=1e-5)


def test_only_a_convolution_followed_by_its_activation_is_fused():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),  # a batch norm between: not fused
        nn.Conv2d(8, 8, 1), nn.Identity(), nn.ReLU6(),  # fused past the Identity
        nn.Conv2d(8, 8, 3, padding="same"), nn.ReLU(),  # string padding: left alone
        nn.Conv2d(8, 8, 3, padding=1), nn.Sigmoid(),  # no oneDNN post-op for it here
        nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU()),  # nested Sequentials too
        nn.Conv2d(4, 4, 1))  # last, no activation
    keys = set(net.state_dict())
    fuse_conv_activations(net)
    assert [type(m).__name__ for m in net] == [
        "Conv2d", "BatchNorm2d", "ReLU", "ConvActivation2d", "Identity", "Identity", "Conv2d", "ReLU",
        "Conv2d", "Sigmoid", "Sequential", "Conv2d"]
    assert [type(m).__name__ for m in net[10]] == ["ConvActivation2d", "Identity"]
    assert (net[3].post_op, net[3].post_scalars) == ("hardtanh", (0.0, 6.0))
    assert set(net.state_dict()) == keys


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_channels_last_batch_is_dense_channels_last(dtype):
    """A channels-last (C, H, W) map (as the backbone gives) becomes a (1, C, H, W) batch
    with the strides of a freshly made channels-last tensor, the same values in float32."""
    fmap = torch.randn(1, 24, 11, 7).contiguous(memory_format=torch.channels_last)[0].to(dtype)
    assert fmap.unsqueeze(0).stride()[0] == 24  # what unsqueeze gives: not a dense batch stride
    x = channels_last_batch(fmap)
    assert x.dtype == torch.float32 and x.shape == (1, 24, 11, 7)
    assert x.stride() == torch.empty(1, 24, 11, 7, memory_format=torch.channels_last).stride()
    assert torch.equal(x[0], fmap.float())


def test_conv_top_keeps_channels_last_on_odd_sized_maps():
    """The conv top's stride-2 depthwise convolution on an odd-sized map: with a dense
    channels-last batch every block stays channels-last (NCHW would be slower and make
    pooling transpose the map), and the output equals the NCHW computation."""
    from sppdet.features.conv_top import build_conv_top

    top = build_conv_top("mobilenet_v2", 18, "random", reduce=32).eval()
    fmap = torch.randn(1, 96, 43, 29).contiguous(memory_format=torch.channels_last)[0].half()
    with torch.no_grad():
        out = top.apply_to_map(fmap)
        want = top.layers(fmap.float().unsqueeze(0).contiguous())[0]
    assert out.permute(1, 2, 0).is_contiguous()
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)


def test_the_fused_op_is_probed_once_and_refused_when_wrong():
    """The fused op is a PyTorch internal: used only where a small probe gives
    conv-then-activation (here it does); an op that computes something else, or fails, is not."""
    import sppdet.perf as perf

    assert perf._fused_conv_op() is not None  # this build: the fused path is what the tests ran
    assert perf._fused_op_works(torch.ops.mkldnn._convolution_pointwise)
    assert not perf._fused_op_works(lambda x, w, b, *rest: torch.nn.functional.conv2d(x, w, b, 1, 1))

    def broken(*args):
        raise RuntimeError("no such kernel")

    assert not perf._fused_op_works(broken)

"""Backbone registry: declared stride, offset and channels against the real networks."""

from __future__ import annotations

import copy
import urllib.error

import pytest
import torch
from torch import nn

from sppdet.errors import SppdetError
from sppdet.features.backbones import BACKBONES, get_backbone
from sppdet.features.geometry import derive_geometry
from sppdet.perf import ConvActivation2d

NAMES = list(BACKBONES)


@pytest.fixture(scope="module")
def random_backbones():
    return {name: get_backbone(name, "random") for name in NAMES}


def linearised(trunk: nn.Module) -> nn.Module:
    """A copy whose output is a positive linear function of the input: convolutions with
    positive weights and no bias, max pooling as average pooling, normalisation and
    activations removed. Its gradient support is exactly each cell's receptive field."""
    net = copy.deepcopy(trunk).double()

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d):
                if isinstance(child, ConvActivation2d):  # drop the fused activation too
                    child.__class__ = nn.Conv2d
                with torch.no_grad():
                    child.weight.copy_(torch.rand_like(child.weight) + 0.5)
                    if child.bias is not None:
                        child.bias.zero_()
            elif isinstance(child, nn.MaxPool2d):
                setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
            elif isinstance(child, (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LocalResponseNorm)):
                setattr(module, name, nn.Identity())
            else:
                swap(child)

    swap(net)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def receptive_field_centre(trunk: nn.Module, stride: int, axis: int) -> tuple[float, float]:
    """Measured centre of an interior cell's receptive field along x (axis=1) or y (axis=0),
    on a long thin input so that the field is not clipped along that axis; returns
    (measured centre, cell index)."""
    long, thin = 32 * stride, 32
    shape = (1, 3, thin, long) if axis == 1 else (1, 3, long, thin)
    x = torch.ones(shape, dtype=torch.float64, requires_grad=True)
    out = linearised(trunk)(x)
    j = out.shape[3 if axis == 1 else 2] // 2
    cell = out[0, 0, out.shape[2] // 2, j] if axis == 1 else out[0, 0, j, out.shape[3] // 2]
    cell.backward()
    support = (x.grad[0].abs().sum(dim=(0, 1 if axis == 1 else 2)) > 0).nonzero().flatten()
    lo, hi = int(support.min()), int(support.max())
    assert lo > 0 and hi < long - 1, "receptive field clipped by the input: use a longer input"
    return (lo + hi) / 2, j


@pytest.mark.parametrize("name", NAMES)
def test_declared_stride_matches_output_size(name, random_backbones):
    b = random_backbones[name]
    assert b.stride == 16
    sizes = []
    with torch.inference_mode():
        for extra in (0, 1, 3):
            n = 96 + extra * b.stride
            sizes.append(b(torch.zeros(1, 3, n, n + b.stride)).shape)
    for (_, c, h, w), extra in zip(sizes, (0, 1, 3)):
        assert c == b.channels
        assert h - sizes[0][2] == extra and w - sizes[0][3] == extra
        assert w - h == 1  # one stride more input -> one cell more output


@pytest.mark.parametrize("name", NAMES)
def test_derived_offset_matches_measured_receptive_field(name, random_backbones):
    b = random_backbones[name]
    for axis in (0, 1):
        centre, j = receptive_field_centre(b.trunk, b.stride, axis)
        assert centre == pytest.approx(b.stride * j + b.offset)


def test_known_geometries(random_backbones):
    # Hand-derived: AlexNet conv1 11/4 pad 2 -> +3, pool 3/2 -> +4, pool2 3/2 -> +8: 15.
    # VGG16: 2x2 pools at strides 1, 2, 4, 8 each add half their input stride: 7.5.
    assert random_backbones["alexnet"].offset == 15.0
    assert random_backbones["vgg16"].offset == 7.5
    for name in ("mobilenet_v2", "resnet50", "zf5"):
        assert random_backbones[name].offset == 0.0
    assert {n: b.channels for n, b in random_backbones.items()} == {
        "mobilenet_v2": 96, "alexnet": 256, "vgg16": 512, "resnet50": 1024, "zf5": 256}


def test_geometry_walk_refuses_dilation():
    with pytest.raises(ValueError, match="dilated"):
        derive_geometry(nn.Sequential(nn.Conv2d(3, 3, 3, padding=2, dilation=2)))


def test_random_init_is_reproducible():
    a, b = get_backbone("zf5", "random"), get_backbone("zf5", "none")
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert a.weights == "random(seed=0)" and a.describe()["stride"] == 16


def test_weights_file_round_trip(tmp_path, random_backbones):
    src = random_backbones["zf5"]
    with torch.no_grad():
        changed = copy.deepcopy(src)
        for p in changed.parameters():
            p.add_(1.0)
    path = tmp_path / "zf5.pth"
    torch.save(changed.trunk.state_dict(), path)
    loaded = get_backbone("zf5", str(path))
    for pa, pb in zip(loaded.parameters(), changed.parameters()):
        assert torch.equal(pa, pb)
    assert loaded.weights.startswith("file:zf5.pth#sha256:")
    bad = tmp_path / "bad.pth"
    torch.save({"something": torch.zeros(3)}, bad)
    with pytest.raises(SppdetError, match="does not fit zf5"):
        get_backbone("zf5", str(bad))
    with pytest.raises(SppdetError, match="not found"):
        get_backbone("zf5", str(tmp_path / "missing.pth"))


def test_unknown_names_are_clear_errors():
    with pytest.raises(SppdetError, match="unknown backbone"):
        get_backbone("lenet")
    with pytest.raises(SppdetError, match="unknown weights"):
        get_backbone("alexnet", "IMAGENET9K")
    with pytest.raises(SppdetError, match="no torchvision weights"):
        get_backbone("zf5", "IMAGENET1K_V1")


def test_download_failure_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(SppdetError, match="--weights random"):
        get_backbone("alexnet", "IMAGENET1K_V1")


def test_mobilenet_v2_imagenet_weights_through_torchvision(torch_home):
    b = get_backbone("mobilenet_v2")  # default weights, from TORCH_HOME's cache
    assert b.weights == "IMAGENET1K_V1"
    r = get_backbone("mobilenet_v2", "random")
    first = next(b.trunk.parameters())
    assert not torch.equal(first, next(r.trunk.parameters()))
    assert not any(p.requires_grad for p in b.parameters()) and not b.training


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet50"])
def test_batchnorm_folding_keeps_outputs(name):
    from sppdet.features.backbones import fold_batchnorm

    spec = BACKBONES[name]
    torch.manual_seed(1)
    trunk = spec.cut(spec.build()).eval()
    for m in trunk.modules():  # non-trivial statistics, as in trained weights
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    x = torch.randn(1, 3, 64, 80)
    with torch.inference_mode():
        want = trunk(x)
        folded = fold_batchnorm(copy.deepcopy(trunk))
        got = folded(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))

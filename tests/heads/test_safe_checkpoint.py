"""Training checkpoints (.npz, never pickles): exact round trip, and crafted files refused unread."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sppdet.errors import DataError
from sppdet.heads.finetune import FinetuneParams, build_window_pool, train_fc
from sppdet.heads.safe_checkpoint import (load_training_checkpoint, read_training_checkpoint,
                                          save_training_checkpoint)
from sppdet.heads.scaling import estimate_scale
from tests.heads.synthetic_heads import SyntheticSource, make_images


class _Payload:
    """Unpickling this creates ``marker``: the proof that a pickle ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _write_payload(path: Path, marker: Path, via_torch: bool) -> None:
    if via_torch:
        torch.save({"iteration": 1, "x": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(marker)))


def test_round_trip_restores_model_optimizer_rng_and_meta(tmp_path):
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    net.register_buffer("bf16", torch.arange(3, dtype=torch.bfloat16))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.8, 0.99))
    net(torch.randn(5, 4)).sum().backward()
    opt.step()
    meta = {"iteration": 7, "losses": [0.5, 0.25], "params": {"lr": 0.1, "sizes": (1, 2)},
            "array": np.arange(4, dtype=np.int32), "none": None}
    path = tmp_path / "c.npz"
    save_training_checkpoint(path, model=net, optimizer=opt, meta=meta)
    expected_draw = torch.rand(3)  # the RNG state was saved before this draw

    torch.manual_seed(99)
    net2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    net2.register_buffer("bf16", torch.zeros(3, dtype=torch.bfloat16))
    opt2 = torch.optim.Adam(net2.parameters(), lr=1e-3, betas=(0.8, 0.99))
    got = load_training_checkpoint(path, net2, opt2, expect={"params": meta["params"]})
    assert torch.equal(torch.rand(3), expected_draw)
    for (k, a), (_, b) in zip(net.state_dict().items(), net2.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), k
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid in s1["state"]:
        for key, v in s1["state"][pid].items():
            assert torch.equal(v, s2["state"][pid][key])
    assert got["iteration"] == 7 and got["losses"] == [0.5, 0.25] and got["none"] is None
    assert got["params"]["sizes"] == (1, 2)
    np.testing.assert_array_equal(got["array"], meta["array"])
    with pytest.raises(DataError, match="other settings"):
        load_training_checkpoint(path, net2, opt2, expect={"params": {"lr": 0.2}})


@pytest.mark.parametrize("via_torch", [False, True])
def test_pickle_payload_is_never_executed(tmp_path, via_torch):
    marker = tmp_path / "PWNED"
    path = tmp_path / "c.npz"
    _write_payload(path, marker, via_torch)
    with pytest.raises(DataError, match="not a training checkpoint"):
        read_training_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_checkpoint_is_a_clear_error(tmp_path, damage):
    net = torch.nn.Linear(2, 2)
    path = tmp_path / "c.npz"
    save_training_checkpoint(path, model=net, optimizer=None, meta={"iteration": 1})
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"x" * 100}[damage])
    with pytest.raises(DataError, match=str(path)):
        load_training_checkpoint(path, net, None)


SMALL = FinetuneParams(hidden=16, iterations=120, lr_step=80, batch_size=32, lr=0.05,
                       fg_per_image=8, bg_per_image=24, dropout=0.1)


@pytest.fixture(scope="module")
def pool():
    images = make_images(12, 3, seed=5, n_random=60)
    source = SyntheticSource(images, 3, noise=0.02)
    scale, _ = estimate_scale(images, source, num_images=6)
    return build_window_pool(images, source, scale, SMALL, progress=False)


def _weights_bytes(fc) -> bytes:
    return b"".join(v.numpy().tobytes() for v in fc.state_dict().values())


def test_finetune_resume_is_byte_identical_and_refuses_payloads(pool, tmp_path):
    whole, s_whole = train_fc(pool, 3, SMALL, progress=False)
    ckpt = tmp_path / "finetune.ckpt.npz"
    train_fc(pool, 3, SMALL, checkpoint=ckpt, checkpoint_every=50, stop_after=70, progress=False)
    assert ckpt.is_file()
    torch.manual_seed(12345)  # the resumed run must not depend on the process's RNG state
    resumed, s_res = train_fc(pool, 3, SMALL, checkpoint=ckpt, checkpoint_every=50, progress=False)
    assert s_res["iterations_run"] == SMALL.iterations - 70
    assert _weights_bytes(resumed) == _weights_bytes(whole)
    assert s_res["loss_every_100"] == s_whole["loss_every_100"]
    with pytest.raises(DataError, match="other settings"):
        train_fc(pool, 3, replace(SMALL, lr=0.1), checkpoint=ckpt, progress=False)

    # A crafted pickle at the checkpoint path, or at the old pickled checkpoint's name.
    marker = tmp_path / "PWNED"
    for via_torch in (False, True):
        _write_payload(ckpt, marker, via_torch)
        with pytest.raises(DataError, match="finetune.ckpt.npz"):
            train_fc(pool, 3, SMALL, checkpoint=ckpt, progress=False)
    ckpt.unlink()
    _write_payload(tmp_path / "finetune.ckpt.pt", marker, True)
    with pytest.raises(DataError, match=r"finetune.ckpt.pt.*not read"):
        train_fc(pool, 3, SMALL, checkpoint=ckpt, progress=False)
    assert not marker.exists()


def test_other_readers_of_torch_files_refuse_payloads(tmp_path):
    """The two remaining torch.load calls (a version-1 fc.pt, a backbone --weights file) use
    weights_only=True: a pickle payload is refused unread."""
    from sppdet.errors import ModelFormatError, SppdetError
    from sppdet.features.backbones import get_backbone
    from sppdet.heads.model_dir import load_fc

    marker = tmp_path / "PWNED"
    path = tmp_path / "fc.pt"
    _write_payload(path, marker, True)
    with pytest.raises(ModelFormatError, match="fc.pt"):
        load_fc(path)
    with pytest.raises(SppdetError, match="fc.pt"):
        get_backbone("zf5", weights=str(path))
    assert not marker.exists()

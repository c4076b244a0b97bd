"""A model directory changes all at once: a crash between its files (simulated by a failing
write) leaves the previous model whole and loadable, the checkpoint stays for the rerun,
and the rerun's model equals an uninterrupted run's, byte for byte."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import sppdet.atomic_dir as atomic_dir
import sppdet.heads.model_dir as model_dir
from sppdet.atomic_dir import atomic_directory, recover_directory
from sppdet.heads.model_dir import load_model
from tests.heads.test_heads_cli import caches, run  # noqa: F401 - the fixture

FT = ["--hidden", "16", "--lr-step", "30", "--batch-size", "16", "--fg-per-image", "4",
      "--bg-per-image", "8", "--checkpoint-every", "20"]


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _no_leftovers(path: Path) -> bool:
    return not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.sppdet-")]


class Crash(Exception):
    pass


def _crash_on_config(monkeypatch) -> None:
    """Make config.json / finetune.json writes fail: a crash after the weights are written."""
    def failing(path, obj):
        raise Crash(f"simulated crash before writing {Path(path).name}")

    monkeypatch.setattr(model_dir, "save_json", failing)


def test_train_svm_crash_keeps_the_old_model_and_the_checkpoint(caches, monkeypatch):  # noqa: F811
    tmp, common = caches
    out, fresh = tmp / "svm_atomic", tmp / "svm_fresh"
    assert run("train-svm", *common, "--out", str(out), "--no-bbox-reg", "--svm-c", "0.01") == 0
    old = _tree(out)
    old_model = load_model(out)
    _crash_on_config(monkeypatch)
    args = [*common, "--no-bbox-reg", "--svm-c", "0.1", "--retrain-every", "50", "--checkpoint-every", "4"]
    with pytest.raises(Crash):
        from sppdet.cli import main
        main(["train-svm", *args, "--out", str(out)])
    assert _tree(out).keys() - old.keys() == {".train-svm-checkpoint/positives.npz",
                                              ".train-svm-checkpoint/mining.npz"}
    assert {k: v for k, v in _tree(out).items() if k in old} == old  # the old model, whole
    np.testing.assert_array_equal(load_model(out).svm_W, old_model.svm_W)
    assert _no_leftovers(out)
    monkeypatch.undo()
    assert run("train-svm", *args, "--out", str(out)) == 0  # resumes from the checkpoint
    assert not (out / ".train-svm-checkpoint").exists()
    assert run("train-svm", *args, "--out", str(fresh)) == 0
    assert (out / "heads.npz").read_bytes() == (fresh / "heads.npz").read_bytes()
    assert (out / "heads.npz").read_bytes() != old["heads.npz"]


def test_finetune_crash_keeps_the_old_layers_and_the_checkpoint(caches, monkeypatch):  # noqa: F811
    tmp, common = caches
    out, fresh = tmp / "ft_atomic", tmp / "ft_fresh"
    assert run("finetune", *common, "--out", str(out), *FT, "--iterations", "30") == 0
    old = _tree(out)
    _crash_on_config(monkeypatch)
    with pytest.raises(Crash):
        from sppdet.cli import main
        main(["finetune", *common, "--out", str(out), *FT, "--iterations", "40"])
    assert set(_tree(out)) == set(old) | {"finetune.ckpt.npz"}
    assert {k: v for k, v in _tree(out).items() if k in old} == old
    monkeypatch.undo()
    assert run("finetune", *common, "--out", str(out), *FT, "--iterations", "40") == 0
    assert run("finetune", *common, "--out", str(fresh), *FT, "--iterations", "40") == 0
    assert (out / "fc.npz").read_bytes() == (fresh / "fc.npz").read_bytes() != old["fc.npz"]
    assert not (out / "finetune.ckpt.npz").exists() and _no_leftovers(out)
    # Fine-tuning again under a head-fc7 model drops its SVMs (they read the old fc7).
    assert run("train-svm", *common, "--out", str(out), "--head", "fc7", "--no-bbox-reg") == 0
    assert run("finetune", *common, "--out", str(out), *FT, "--iterations", "30") == 0
    assert not (out / "config.json").exists() and not (out / "heads.npz").exists()
    assert (out / "fc.npz").read_bytes() == old["fc.npz"]


def test_pack_crash_keeps_the_old_packed_model(caches, monkeypatch):  # noqa: F811
    tmp, common = caches
    src, dst = tmp / "pack_src", tmp / "pack_dst"
    assert run("train-svm", *common, "--out", str(src), "--no-bbox-reg") == 0
    assert run("pack", str(src), str(dst), "--storage", "float16") == 0
    old = _tree(dst)
    monkeypatch.setattr(model_dir, "save_json", lambda *a: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        from sppdet.cli import main
        main(["pack", str(src), str(dst), "--storage", "int8"])
    assert _tree(dst) == old and _no_leftovers(dst)


def test_atomic_directory_keeps_other_files_and_drops_excluded(tmp_path):
    d = tmp_path / "m"
    (d / "ckpt").mkdir(parents=True)
    (d / "ckpt" / "a.npz").write_text("c")
    (d / "keep.txt").write_text("k")
    (d / "w.npz").write_text("old")
    with atomic_directory(d, exclude={"ckpt"}) as new:
        (new / "w.npz").write_text("new")
        assert (d / "w.npz").read_text() == "old"  # nothing visible before the end
    assert _tree(d) == {"keep.txt": b"k", "w.npz": b"new"} and _no_leftovers(d)
    with pytest.raises(ValueError):
        with atomic_directory(d) as new:
            (new / "w.npz").write_text("newer")
            raise ValueError("writer failed")
    assert _tree(d) == {"keep.txt": b"k", "w.npz": b"new"} and _no_leftovers(d)


@pytest.mark.parametrize("exchange", [True, False])
def test_a_swap_killed_halfway_is_completed(tmp_path, monkeypatch, exchange):
    """Death right after the first step of the swap: the exchange (then the old directory
    is still to be moved away), or the first of two renames (then NAME does not exist)."""
    d = tmp_path / "m"
    d.mkdir()
    (d / "w.npz").write_text("old")
    if exchange and not atomic_dir._exchange(tmp_path, tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) unsupported here")
    if not exchange:
        monkeypatch.setattr(atomic_dir, "_exchange", lambda a, b: False)
    real_rename, calls = os.rename, []

    def rename(a, b):
        calls.append(b)
        if len(calls) == (1 if exchange else 2):
            raise Crash("killed in the middle of the swap")
        real_rename(a, b)

    monkeypatch.setattr(atomic_dir.os, "rename", rename)
    with pytest.raises(Crash):
        with atomic_directory(d) as new:
            (new / "w.npz").write_text("new")
    monkeypatch.setattr(atomic_dir.os, "rename", real_rename)
    if exchange:
        assert (d / "w.npz").read_text() == "new"
    else:
        assert not d.exists()
    recover_directory(d)
    assert (d / "w.npz").read_text() == "new" and _no_leftovers(d)


def test_loading_completes_an_interrupted_swap(tmp_path):
    d = tmp_path / "m"
    (tmp_path / ".m.sppdet-new").mkdir()
    (tmp_path / ".m.sppdet-old").mkdir()
    (tmp_path / ".m.sppdet-new" / "config.json").write_text('{"format_version": 2}')
    assert model_dir.read_config(d) == {"format_version": 2} and _no_leftovers(d)

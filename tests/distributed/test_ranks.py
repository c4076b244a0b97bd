"""sppdet.distributed: the shares, the environment, and the collectives in two real gloo
processes on the loopback (JSON gather, broadcast, rank-0 errors, sharded detection)."""

from __future__ import annotations

import os
import socket
import sys
import types

import numpy as np
import pytest

from sppdet.distributed import Ranks, all_gather_json, broadcast_json, main_first, ranks_from_env
from sppdet.errors import ConfigMismatchError, SppdetError


def test_shares_partition_the_list_deterministically():
    items = [f"{k:06d}" for k in range(23)]
    for world in (1, 2, 3, 5, 30):
        shares = [Ranks(r, world).share(items) for r in range(world)]
        assert sorted(x for s in shares for x in s) == items
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        assert shares == [Ranks(r, world).share(items) for r in range(world)]
    assert Ranks().share(items) == items and not Ranks().sharded and Ranks().is_main


def test_ranks_from_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert ranks_from_env() == Ranks(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert ranks_from_env() == Ranks(3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(SppdetError, match="inconsistent"):
        ranks_from_env()
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(SppdetError, match="WORLD_SIZE='four' is not an integer"):
        ranks_from_env()


def test_plain_run_collectives_are_local():
    r = Ranks()
    assert all_gather_json(r, {"a": [1.5]}) == [{"a": [1.5]}]
    assert broadcast_json(r, [1, 2]) == [1, 2]
    assert main_first(r, lambda: 7) == 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stand_in_detect_dataset(model_dir, dataset, **kwargs):
    """A stand-in for sppdet.detector.detect_dataset: 0-3 seeded boxes per image."""
    from sppdet.detections import Detections

    for image_id in dataset.ids:
        k = int(image_id)
        rng = np.random.default_rng(k)
        n = k % 4
        xy = rng.uniform(0, 50, (n, 2))
        yield Detections(image_id, np.concatenate([xy, xy + rng.uniform(1, 40, (n, 2))], 1),
                         rng.normal(size=n), np.arange(n) % 2)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """One rank: exercises the collectives and writes what it saw as JSON."""
    import json

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    from sppdet.data import VOCDataset
    from sppdet.distributed import sharded_run
    from sppdet.evaluation.pipeline import load_or_run_detections

    sys.modules["sppdet.detector"] = types.SimpleNamespace(detect_dataset=_stand_in_detect_dataset)
    seen: dict = {}
    with sharded_run("cpu") as ranks:
        seen["ranks"] = [ranks.rank, ranks.world_size]
        seen["gathered"] = all_gather_json(ranks, {"rank": rank, "payload": "x" * (1000 * rank)})
        seen["broadcast"] = broadcast_json(ranks, f"from {rank}")
        seen["empty"] = all_gather_json(ranks, [] if rank else {"big": list(range(5000))})

        def refuse():
            raise ConfigMismatchError("cache made with other settings")

        try:
            main_first(ranks, refuse)
        except ConfigMismatchError as e:
            seen["error"] = str(e)
        ds = VOCDataset(out_dir + "/voc", split="train", classes=("cat", "dog"))
        dets = load_or_run_detections(ds, "train", model_dir="unused", ranks=ranks,
                                      out_dir=out_dir + "/results" if rank == 0 else None)
        seen["dets"] = None if dets is None else {
            c: [d.image_ids.tolist(), d.scores.tolist(), d.boxes.tolist()] for c, d in dets.items()}
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(seen, f)


def test_two_gloo_ranks_gather_broadcast_and_detect_like_one_process(tmp_path, make_voc):
    import json

    import torch.multiprocessing as mp

    root = make_voc(n_images=9)
    os.symlink(root, tmp_path / "voc")
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    r0, r1 = (json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2))
    assert r0["ranks"] == [0, 2] and r1["ranks"] == [1, 2]
    expect = [{"rank": 0, "payload": ""}, {"rank": 1, "payload": "x" * 1000}]
    assert r0["gathered"] == r1["gathered"] == expect
    assert r0["broadcast"] == r1["broadcast"] == "from 0"
    assert r0["empty"] == r1["empty"] == [{"big": list(range(5000))}, []]
    assert r0["error"] == "cache made with other settings"
    assert r1["error"] == "(rank 0) cache made with other settings"
    assert r1["dets"] is None
    # Rank 0 holds every image's detections in the data set's order, as one process would.
    from sppdet.data import VOCDataset
    from sppdet.detections import group_by_class

    ds = VOCDataset(root, split="train", classes=("cat", "dog"))
    single = group_by_class(_stand_in_detect_dataset(None, ds), ds.classes)
    for c, d in single.items():
        assert r0["dets"][c] == [d.image_ids.tolist(), d.scores.tolist(), d.boxes.tolist()]
    assert sum(len(v[0]) for v in r0["dets"].values()) == sum(k % 4 for k in range(9))
    assert (tmp_path / "results" / "comp4_det_train_cat.txt").is_file()


@pytest.mark.parametrize("command", ["train-svm", "finetune"])
def test_unsharded_training_commands_refuse_several_ranks(command, make_voc, tmp_path, monkeypatch, capsys):
    from sppdet.cli import main

    root = make_voc(n_images=2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as e:
        main([command, "--voc", str(root), "--classes", str(_classes(tmp_path)), "--features",
              str(tmp_path / "f"), "--proposals", str(tmp_path / "p"), "--out", str(tmp_path / "m")])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert f"{command} is not sharded (WORLD_SIZE=2)" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def _classes(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("cat\ndog\n")
    return path

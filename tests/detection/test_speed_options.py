"""Proposal workers (results identical to the serial run), the fast preset, the timing hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sppdet.detector import Detector, apply_preset, detect_dataset, load_models
from sppdet.errors import ArgumentError, SppdetError
from sppdet.heads.model_dir import save_model
from sppdet.presets import PRESETS, get_preset, preset_config
from sppdet.timing import STAGES, StageTimer
from tests.detection.test_detector import CLASSES, random_model


def _same(a, b):
    assert [d.image_id for d in a] == [d.image_id for d in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.scores, y.scores)
        np.testing.assert_array_equal(x.labels, y.labels)


def _random_model_and_voc(make_voc, tmp_path, n_images: int):
    """A random model saved to tmp_path/m and a tiny VOC data set of its classes."""
    from sppdet.data import VOCDataset

    root = make_voc(n_images=n_images, size=(200, 150), classes=tuple(CLASSES))
    model = random_model(96 * 50, 0)
    model.config["test"] = {"score_threshold": -1.5, "nms_iou": 0.3, "max_per_image": 100}
    save_model(tmp_path / "m", model)
    return VOCDataset(root, split="train", classes=CLASSES)


def _write_random_images(folder, n: int, seed: int, height: int, width: int) -> list:
    """n random JPEG files im0.jpg ... in ``folder``, each 10 pixels taller than the last."""
    import cv2

    rng = np.random.default_rng(seed)
    paths = [folder / f"im{k}.jpg" for k in range(n)]
    for k, path in enumerate(paths):
        cv2.imwrite(str(path), rng.integers(0, 255, (height + 10 * k, width, 3), dtype=np.uint8))
    return paths


@pytest.mark.parametrize("ahead", [{"workers": 2}, {"overlap": True}], ids=["workers", "thread"])
def test_detect_dataset_prefetch_identical_to_serial(make_voc, tmp_path, ahead):
    """Proposals in worker processes or in a second thread: the serial run's detections."""
    ds = _random_model_and_voc(make_voc, tmp_path, 5)
    serial = list(detect_dataset(tmp_path / "m", ds, device="cpu", progress=False, overlap=False))
    prefetched = list(detect_dataset(tmp_path / "m", ds, device="cpu", progress=False, **ahead))
    assert sum(len(d.scores) for d in serial) > 0
    _same(serial, prefetched)


def test_detect_cli_workers_identical_to_serial(tmp_path):
    from sppdet.data import read_image
    from sppdet.result import DetectionResult

    save_model(tmp_path / "m", random_model(96 * 50, 0))
    paths = _write_random_images(tmp_path, 3, seed=0, height=90, width=120)
    (tmp_path / "im9.jpg").write_bytes(b"not an image")
    out = tmp_path / "d.json"
    cmd = [sys.executable, "-m", "sppdet", "detect", str(paths[0]), str(tmp_path / "im9.jpg"),
           str(paths[1]), str(paths[2]), "--model", str(tmp_path / "m"), "--json", str(out),
           "--score-thresh", "-1e9", "--workers", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "im9.jpg: cannot decode image" in result.stderr
    got = json.loads(out.read_text())["images"]
    # The serial reference, in this process, on as many torch threads as the CLI leaves to
    # the conv passes beside one worker (other thread counts round sums differently, which
    # reorders this random model's many near-equal scores).
    import torch

    from sppdet.cli.options import share_cores

    threads = torch.get_num_threads()
    try:
        share_cores(1)
        detector = Detector.load(tmp_path / "m", "cpu", score_threshold=-1e9)
        want = []
        for path in paths:
            image = read_image(path)
            dets = detector.detect(image, path.stem)
            want.append(json.loads(json.dumps(DetectionResult.from_detections(
                dets, detector.classes, image.shape[:2], str(path)).to_dict())))
    finally:
        torch.set_num_threads(threads)
    assert len(got) == 3 and got == want


def test_detect_and_eval_tune_the_allocator(make_voc, tmp_path, monkeypatch):
    """The commands that run the network keep large blocks in glibc's heap, as the
    benchmarks do (sppdet.perf.tune_allocator): users get the speed the docs quote."""
    from click.testing import CliRunner

    import sppdet.perf
    from sppdet.cli import cli

    calls = []
    monkeypatch.setattr(sppdet.perf, "tune_allocator", lambda: calls.append(1) or True)
    ds = _random_model_and_voc(make_voc, tmp_path, 2)
    image = _write_random_images(tmp_path, 1, seed=1, height=90, width=120)[0]
    r = CliRunner().invoke(cli, ["detect", str(image), "--model", str(tmp_path / "m"), "--serial",
                                 "--json", str(tmp_path / "d.json")])
    assert r.exit_code == 0, r.output
    assert calls == [1]
    r = CliRunner().invoke(cli, ["eval", "--voc", str(ds.root), "--split", "train", "--model", str(tmp_path / "m"),
                                 "--serial", "--out", str(tmp_path / "eval")])
    assert r.exit_code == 0, r.output
    assert calls == [1, 1]


def test_fast_preset_settings_and_errors():
    from sppdet.models import shipped_model_dir

    models = load_models([shipped_model_dir()])
    proposer = apply_preset(models, "fast")
    fast = PRESETS["fast"]
    assert models[0].config["scales"] == list(fast.scales) == [688]
    assert proposer.method.name == "edgeboxes" and proposer.method.common.max_boxes == 1000
    detector = Detector(models, "cpu", proposer=proposer)
    assert next(iter(detector.extractors.values())).scales == (688,)
    assert apply_preset(load_models([shipped_model_dir()]), "model") is None
    assert get_preset(None).name == "model"
    with pytest.raises(ArgumentError, match="unknown preset 'turbo'"):
        get_preset("turbo")
    with pytest.raises(ArgumentError, match="not trained at"):
        preset_config({"scales": [480, 576]}, fast)


def test_timer_records_every_stage():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    timer = StageTimer()
    detector = Detector([random_model(96 * 50, 1)], "cpu", timer=timer)
    detector.detect(image)
    assert set(timer.seconds) == set(STAGES)
    assert all(timer.calls[s] == 1 for s in STAGES) and timer.total() > 0


def test_workers_need_a_registered_method():
    detector = Detector([random_model(96 * 50, 1)], "cpu", proposer=lambda im: np.zeros((0, 4)))
    with pytest.raises(SppdetError, match="registered proposal method"):
        detector.proposal_method()


def test_max_proposals_scores_the_first_k_of_each_image(make_voc, tmp_path):
    """Capping at K equals running on a proposal cache that holds only each image's first K."""
    import json as _json

    ds = _random_model_and_voc(make_voc, tmp_path, 3)
    rng = np.random.default_rng(0)
    full, first = tmp_path / "full", tmp_path / "first"
    for folder in (full, first):
        folder.mkdir()
        (folder / "meta.json").write_text(_json.dumps({"method": "fixture", "params": {}, "format": 1}))
    for image_id in ds.ids:
        xy = rng.uniform(0, 150, (60, 2))
        boxes = np.concatenate([xy, np.minimum(xy + rng.uniform(8, 80, (60, 2)), [200, 150])], 1)
        scores = np.arange(60, 0, -1, dtype=np.float32)
        np.savez(full / f"{image_id}.npz", boxes=boxes.astype(np.float32), scores=scores)
        np.savez(first / f"{image_id}.npz", boxes=boxes[:25].astype(np.float32), scores=scores[:25])
    capped = list(detect_dataset(tmp_path / "m", ds, proposals_dir=full, device="cpu",
                                 progress=False, max_proposals=25))
    want = list(detect_dataset(tmp_path / "m", ds, proposals_dir=first, device="cpu", progress=False))
    every = list(detect_dataset(tmp_path / "m", ds, proposals_dir=full, device="cpu", progress=False))
    assert sum(len(d.scores) for d in want) > 0
    _same(capped, want)
    with pytest.raises(AssertionError):
        _same(every, want)  # the cap changes what is found
    with pytest.raises(ArgumentError, match="max_proposals"):
        next(detect_dataset(tmp_path / "m", ds, proposals_dir=full, device="cpu", max_proposals=0))


class _ConstantBoxes:
    """A picklable stand-in for a proposal method (worker processes import it)."""

    def __call__(self, image):
        from types import SimpleNamespace

        return SimpleNamespace(boxes=np.full((1, 4), float(image[0, 0])))


def test_prefetch_workers_have_exited_when_every_image_is_read():
    """Read to the end, the worker processes are joined: no executor is left for the
    interpreter's exit hook (which can print "Bad file descriptor" on CPython 3.11)."""
    import multiprocessing as mp

    from sppdet.proposal_prefetch import prefetch

    items = [(k, np.full((4, 4), k, np.uint8), True) for k in range(4)]
    before = set(mp.active_children())
    got = [get() for _, _, get in prefetch(_ConstantBoxes(), items, 2)]
    assert [float(b[0, 0]) for b in got] == [0.0, 1.0, 2.0, 3.0]
    assert set(mp.active_children()) - before == set()


_MAIN_SCRIPT = """
import os, sys
import numpy as np
with open(sys.argv[1], "a") as marker:  # every run of this script as a main module
    marker.write(f"{os.getpid()}\\n")
from sppdet.proposal_prefetch import prefetch
from proposals.base import create_method


class ScriptBoxes:  # a method defined in the main script: the workers need the script
    def __call__(self, image):
        from types import SimpleNamespace
        return SimpleNamespace(boxes=np.full((1, 4), float(image[0, 0, 0])))


if __name__ == "__main__":
    method = create_method("edgeboxes") if sys.argv[2] == "library" else ScriptBoxes()
    items = [(k, np.random.default_rng(k).integers(0, 256, (48, 64, 3), np.uint8), True) for k in range(3)]
    print(sum(isinstance(get(), np.ndarray) for _, _, get in prefetch(method, items, 2)))
"""


@pytest.mark.parametrize("method, runs", [("library", 1), ("script", 3)])
def test_prefetch_workers_skip_the_main_script_unless_the_method_is_defined_there(tmp_path, method, runs):
    """Spawned workers run the parent's main script again only when the method needs it
    (a class defined there): the ``sppdet`` command's and most scripts' top-level imports
    load torch, 1.2 s of CPU per worker."""
    script, marker = tmp_path / "main_script.py", tmp_path / "runs.txt"
    script.write_text(_MAIN_SCRIPT)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script), str(marker), method], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3"]
    assert len(marker.read_text().split()) == runs


def test_prefetch_threaded_keeps_order_and_errors():
    from sppdet.proposal_prefetch import prefetch_threaded

    seen = []

    def propose(image):
        seen.append(int(image[0, 0]))
        if image[0, 0] == 3:
            raise ValueError("bad image 3")
        return np.full((2, 4), float(image[0, 0]))

    items = [(k, np.full((4, 4), k, np.uint8), k != 1) for k in range(5)]
    got = {}
    for key, image, get in prefetch_threaded(propose, items):
        assert int(image[0, 0]) == key
        if key == 3:
            with pytest.raises(ValueError, match="bad image 3"):
                get()
            continue
        got[key] = get()
    assert got[1] is None  # not wanted: never computed
    assert [k for k in got if got[k] is not None] == [0, 2, 4]
    assert all(np.all(got[k] == k) for k in (0, 2, 4))
    assert 1 not in seen and sorted(seen) == [0, 2, 3, 4]


def test_overlapped_detect_identical_to_serial():
    """Proposals in a second thread beside the conv pass give the serial detections."""
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (110 + 7 * k, 150, 3), dtype=np.uint8) for k in range(3)]
    model = random_model(96 * 50, 2)
    serial = Detector([model], "cpu", overlap=False)
    overlapped = Detector([model], "cpu", overlap=True)
    assert not serial.overlaps and overlapped.overlaps
    a = [serial.detect(im, str(k)) for k, im in enumerate(images)]
    b = [overlapped.detect(im, str(k)) for k, im in enumerate(images)]
    assert sum(len(d.scores) for d in a) > 0
    _same(a, b)


def test_overlap_auto_needs_a_free_core(monkeypatch):
    import torch

    import sppdet.detector as detector_module

    detector = Detector([random_model(96 * 50, 1)], "cpu")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setattr(detector_module, "usable_cores", lambda: 2)
        assert detector.overlaps  # one torch thread, a second core for the proposals
        monkeypatch.setattr(detector_module, "usable_cores", lambda: 1)
        assert not detector.overlaps  # they would share the only core
        detector.overlap = True
        assert detector.overlaps
    finally:
        torch.set_num_threads(threads)


def test_detect_cli_overlap_identical_to_serial(tmp_path):
    save_model(tmp_path / "m", random_model(96 * 50, 0))
    paths = _write_random_images(tmp_path, 2, seed=1, height=100, width=130)
    outputs = []
    for mode in ("--overlap", "--serial"):
        out = tmp_path / f"{mode[2:]}.json"
        # One torch thread in both runs, so that only the overlap differs.
        cmd = [sys.executable, "-m", "sppdet", "detect", *map(str, paths), "--model", str(tmp_path / "m"),
               "--json", str(out), "--score-thresh", "-1e9", mode, "--workers", "0"]
        result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr
        outputs.append(json.loads(out.read_text())["images"])
    assert len(outputs[0]) == 2 and sum(len(im["detections"]) for im in outputs[0]) > 0
    assert outputs[0] == outputs[1]


def test_conv_top_runs_with_the_conv_pass():
    """A conv fine-tuned model's conv top runs in the conv stage (beside the proposals when
    overlapped), with the detections of running it after them on the backbone's maps."""
    from sppdet.detector import DetectionParams
    from sppdet.models import shipped_model_dir

    models = load_models([shipped_model_dir()])
    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, (180, 240, 3), dtype=np.uint8)
    xy = rng.uniform(0, 150, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 90, (200, 2))], axis=1)
    timer = StageTimer()
    params = DetectionParams.from_model(models[0], score_threshold=0.0)
    detector = Detector(models, "cpu", params, proposer=lambda im: boxes, timer=timer, overlap=True)
    overlapped = detector.detect(image, "x")
    assert len(overlapped.scores) > 0 and timer.calls["conv"] == 1
    maps = detector.conv_maps(image)
    assert ("top", 0) in maps and maps[("top", 0)].maps[0].shape[0] == 128  # the conv top's output
    backbone_only = {k: v for k, v in maps.items() if k != ("top", 0)}
    after = detector.detect_windows(boxes, backbone_only, image.shape[:2], "x")
    _same([overlapped], [after])


def test_auto_proposal_workers():
    from sppdet.defaults import auto_proposal_workers

    assert auto_proposal_workers(cores=1, images=50) == 0  # nothing to run beside
    assert auto_proposal_workers(cores=2, images=1) == 0  # one image: the proposal thread
    assert [auto_proposal_workers(c, 50) for c in (2, 3, 4, 8, 16)] == [2, 3, 3, 6, 12]


def test_workers_option_default_and_serial(monkeypatch):
    import sppdet.perf
    from sppdet.cli.options import proposal_workers

    monkeypatch.setattr(sppdet.perf, "usable_cores", lambda: 2)
    assert proposal_workers(None, 10, overlap=True) == 2
    assert proposal_workers(None, 10, overlap=False) == 0  # --serial: no workers unless asked
    assert proposal_workers(None, 1, overlap=True) == 0
    assert proposal_workers(1, 10, overlap=True) == 1 and proposal_workers(0, 10, overlap=True) == 0
    assert proposal_workers(3, 10, overlap=False) == 3


@pytest.fixture
def prefetch_workers(monkeypatch):
    """On a (pretended) 2-core machine: the list of ``workers`` of every proposal prefetch
    started (the real prefetch runs)."""
    import sppdet.perf
    import sppdet.proposal_prefetch as prefetch_module

    real_prefetch, used = prefetch_module.prefetch, []

    def spy(method, items, workers, ahead=None):
        used.append(workers)
        return real_prefetch(method, items, workers, ahead)

    monkeypatch.setattr(prefetch_module, "prefetch", spy)
    monkeypatch.setattr(sppdet.perf, "usable_cores", lambda: 2)
    return used


def test_detect_cli_computes_proposals_in_workers_by_default(tmp_path, prefetch_workers):
    """On two cores, detect on several images runs the proposals in two worker processes
    unless told otherwise, with the detections of --workers 0."""
    import torch
    from click.testing import CliRunner

    from sppdet.cli import cli

    save_model(tmp_path / "m", random_model(96 * 50, 0))
    paths = _write_random_images(tmp_path, 3, seed=2, height=90, width=120)
    used = prefetch_workers
    threads = torch.get_num_threads()
    outputs = []
    try:
        for extra in ([], ["--workers", "0"]):
            torch.set_num_threads(1)  # same torch threads in both runs
            out = tmp_path / f"d{len(extra)}.json"
            r = CliRunner().invoke(cli, ["detect", *map(str, paths), "--model", str(tmp_path / "m"),
                                         "--json", str(out), "--score-thresh", "-1e9", *extra])
            assert r.exit_code == 0, r.output
            outputs.append(json.loads(out.read_text())["images"])
    finally:
        torch.set_num_threads(threads)
    assert used == [2]  # the default run only
    assert len(outputs[0]) == 3 and outputs[0] == outputs[1]


def test_eval_cli_computes_proposals_in_workers_by_default(make_voc, tmp_path, prefetch_workers):
    import torch
    from click.testing import CliRunner

    from sppdet.cli import cli

    ds = _random_model_and_voc(make_voc, tmp_path, 3)
    used = prefetch_workers
    threads = torch.get_num_threads()
    try:
        for extra in ([], ["--serial"]):
            r = CliRunner().invoke(cli, ["eval", "--voc", str(ds.root), "--split", "train",
                                         "--model", str(tmp_path / "m"), *extra])
            assert r.exit_code == 0, r.output
            assert "mAP" in r.output
    finally:
        torch.set_num_threads(threads)
    assert used == [2]  # the default run; --serial computes them in this process


@pytest.mark.parametrize("args, dtype", [([], "float32"), (["--precision", "bfloat16"], "bfloat16"),
                                         (["--preset", "fast"], "bfloat16"),
                                         (["--preset", "fast", "--precision", "float32"], "float32")])
def test_precision_reaches_the_scorers(tmp_path, monkeypatch, args, dtype):
    """--precision (default: the preset's) sets the dtype of the layers after the conv."""
    import torch
    from click.testing import CliRunner

    import sppdet.device
    from sppdet.cli import cli
    from sppdet.heads.model_dir import DetectorModel

    model = random_model(96 * 50, 0)
    model.config["scales"] = [688]
    save_model(tmp_path / "m", model)
    paths = _write_random_images(tmp_path, 1, seed=3, height=90, width=120)
    seen, real_scorer = [], DetectorModel.scorer

    def spy(self, device="cpu", dtype=torch.float32):
        seen.append(dtype)
        return real_scorer(self, device, dtype)

    monkeypatch.setattr(DetectorModel, "scorer", spy)
    monkeypatch.setattr(sppdet.device, "bf16_matmul_is_fast", lambda device: True)
    threads = torch.get_num_threads()
    try:
        r = CliRunner().invoke(cli, ["detect", str(paths[0]), "--model", str(tmp_path / "m"), *args])
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    assert seen == [getattr(torch, dtype)]

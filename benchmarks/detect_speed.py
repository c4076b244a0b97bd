"""Seconds per image of the whole detection system, per stage, against torchvision's CPU detectors.

In one process, after warm-up, on real VOC 2007 images (the first ``--images`` of a split):
- the shipped model at its own settings (``--preset model``) and in the fast preset
  (``--preset fast``), for each of ``--threads``; stages from the detector's timing hook
  (``sppdet.timing.StageTimer``): proposals, conv, pooling, scoring (fc layers + SVMs /
  softmax), bbox_reg, nms; evaluation's score threshold. Mode ``serial``: the stages one
  after the other on T torch threads; mode ``overlap`` (T >= 2, what ``sppdet detect`` does
  by default): the proposals in a second thread beside the conv pass, torch on T - 1 threads
  (its stage times overlap: only its total is wall time);
- torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` and ``..._320_fpn`` (random
  initialisation: weights=None, weights_backbone=None; speed does not depend on weights),
  same images and threads, whole forward pass;
- with ``--overlap-images N``: ``detect_dataset`` (what ``sppdet eval --model`` runs) over
  the first N images serially (``--serial``, all threads), with the proposals in a second
  thread (``--overlap``) and in one or two worker processes (``--workers 1``, ``--workers
  2``), torch on the cores left (at least one); detections of the last three checked
  identical (same torch threads on two cores); and, as the bound of those speed-ups, the
  proposals alone in two worker processes over the same images (no conv pass): what two
  cores can do when both run proposals.

Warm-up: the first ``--warmup`` images and the first of each other image size (oneDNN
builds its kernels per input shape; ``warmup_images``). Each per-image configuration
(threads, preset and mode, or torchvision model) runs in its own process, as a user's
command does (``--in-process``: all in this one, the method up to session 9). What an
earlier configuration leaves in a process changes a later one's memory-bound stages: in
one process, the fast preset's pooling on two threads took 3.0 ms fresh, 3.4 ms after a
one-thread run, 3.8 ms after torchvision's FPN detector and 3.6 ms after the 2,000-window
settings (its conv: 60 ms throughout; session 10).

Prints JSON and writes ``--out`` (default benchmarks/results/detect_speed.json). Skips with a
message when the VOC data is absent.

    TORCH_HOME=../shared/weights python -m benchmarks.detect_speed --images 20 --threads 1 2 \\
        --overlap-images 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sppdet.data import VOCDataset
from sppdet.detector import DetectionParams, Detector, apply_preset, detect_dataset, load_models
from sppdet.device import resolve_device
from sppdet.errors import SppdetError
from sppdet.models import shipped_model_dir
from sppdet.perf import tune_allocator
from sppdet.presets import get_preset
from sppdet.timing import STAGES, StageTimer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VOC = REPO.parent / "shared" / "data" / "VOCdevkit" / "VOC2007"
POST_CONV = ("pooling", "scoring", "bbox_reg", "nms")


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys()
    # Microseconds: stage shares (pooling / conv) are computed from these.
    out = {f"{k}_mean": round(statistics.fmean(r[k] for r in rows), 6) for k in keys}
    out.update({f"{k}_median": round(statistics.median(r[k] for r in rows), 6) for k in keys})
    return out


def warmup_images(images: list[tuple[str, np.ndarray]], warmup: int) -> list[tuple[str, np.ndarray]]:
    """The first ``warmup`` images, plus the first image of each size not among them.
    oneDNN builds its conv kernels per input shape, so the first image of a new size costs
    several times more. In a fresh process, the fast preset's conv on two threads over 20 VOC
    images (10 sizes) had a mean of 173 ms and a median of 74 ms; the second pass had 70 and
    64 ms. The timings here are per image in a process that has seen the size before."""
    chosen = list(images[:warmup])
    seen = {image.shape for _, image in chosen}
    for image_id, image in images[warmup:]:
        if image.shape not in seen:
            chosen.append((image_id, image))
            seen.add(image.shape)
    return chosen


def time_sppdet(images: list[tuple[str, np.ndarray]], preset: str, device: str, warmup: int,
                overlap: bool = False, model_dir: Path | None = None) -> dict:
    models = load_models([model_dir or shipped_model_dir()])
    proposer = apply_preset(models, preset)
    # Evaluation's threshold: the most windows to regress and suppress.
    detector = Detector(models, device, DetectionParams.from_model(models[0]), proposer, overlap=overlap,
                        precision=get_preset(preset).precision)
    timer = StageTimer()
    detector.timer = timer
    for image_id, image in warmup_images(images, warmup):
        detector.detect(image, image_id)
    rows = []
    for image_id, image in images:
        timer.reset()
        start = time.perf_counter()
        dets = detector.detect(image, image_id)
        if detector.device.type == "cuda":
            torch.cuda.synchronize()
        row = {s: timer.seconds.get(s, 0.0) for s in STAGES}
        row["post_conv"] = sum(row[s] for s in POST_CONV)
        # Per image, so that the machine's drift over the run cancels out.
        row["pooling_over_conv"] = row["pooling"] / row["conv"] if row["conv"] else 0.0
        row["total"] = time.perf_counter() - start
        row["detections"] = float(len(dets.scores))
        rows.append(row)
    return {"preset": preset, "mode": "overlap" if overlap else "serial", "torch_threads": torch.get_num_threads(),
            "scoring_dtype": str(detector.scoring_dtype).replace("torch.", ""),
            "scales": models[0].config["scales"], "model": str(models[0].path), **summarise(rows)}


def time_torchvision(name: str, images: list[tuple[str, np.ndarray]], device: str, warmup: int) -> dict:
    import torchvision

    model = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None).eval().to(device)
    def tensor(im: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1])).permute(2, 0, 1).float().div(255)

    tensors = [tensor(im) for _, im in images]
    times = []
    with torch.inference_mode():
        for _, im in warmup_images(images, warmup):  # as for sppdet: every image size seen once
            model([tensor(im).to(device)])
        for x in tensors:
            start = time.perf_counter()
            model([x.to(device)])
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return {"model": name, "total_mean": round(statistics.fmean(times), 4),
            "total_median": round(statistics.median(times), 4)}


def time_overlap(voc: Path, split: str, n: int, device: str, threads: int, preset: str,
                 model_dir: Path | None = None) -> dict:
    """Throughput of ``detect_dataset`` over ``n`` images: serial, proposal thread, one worker."""
    from sppdet.cli.options import share_cores

    out: dict = {"images": n, "preset": preset}
    dets = {}
    modes = (("serial", 0, False), ("thread", 0, True), ("workers1", 1, False), ("workers2", 2, False))
    for mode, workers, overlap in modes:
        torch.set_num_threads(threads)
        if mode != "serial":
            share_cores(max(1, workers))  # torch on the cores left (at least one)
        ds = VOCDataset(voc, split=split, limit=n)
        start = time.perf_counter()
        dets[mode] = list(detect_dataset(model_dir or shipped_model_dir(), ds, device=device, progress=False,
                                         preset=preset, workers=workers, overlap=overlap))
        seconds = time.perf_counter() - start
        out[f"{mode}_s"] = round(seconds, 2)
        out[f"{mode}_images_per_s"] = round(n / seconds, 4)
        out[f"{mode}_torch_threads"] = torch.get_num_threads()
    for mode, _, _ in modes[1:]:
        out[f"{mode}_speedup"] = round(out[f"{mode}_images_per_s"] / out["serial_images_per_s"], 3)
    seconds = time_proposals_only(voc, split, n, device, preset, model_dir, workers=2)
    out["proposals_only_workers2_s"] = round(seconds, 2)
    out["proposals_only_workers2_bound"] = round(out["serial_s"] / seconds, 3)
    for mode in ("workers1", "workers2"):  # same torch threads as "thread" on two cores
        out[f"thread_identical_to_{mode}"] = all(
            np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
            and np.array_equal(a.labels, b.labels) for a, b in zip(dets["thread"], dets[mode]))
    torch.set_num_threads(threads)
    return out


def time_proposals_only(voc: Path, split: str, n: int, device: str, preset: str, model_dir: Path | None,
                        workers: int) -> float:
    """Seconds for the proposals of the first ``n`` images in ``workers`` processes, as
    ``detect_dataset`` computes them, with nothing else running (images read here)."""
    from sppdet.proposal_prefetch import prefetch

    models = load_models([model_dir or shipped_model_dir()])
    detector = Detector(models, device, DetectionParams.from_model(models[0]), apply_preset(models, preset))
    ds = VOCDataset(voc, split=split, limit=n)
    start = time.perf_counter()
    items = ((i, ds.load_image(i), True) for i in ds.ids)
    for _, _, get_boxes in prefetch(detector.proposal_method(), items, workers):
        get_boxes()
    return time.perf_counter() - start


def run_config(config: dict, images: list[tuple[str, np.ndarray]], args: argparse.Namespace) -> dict:
    """One per-image configuration in this process: ``{"threads", "preset", "overlap"}`` for
    sppdet, ``{"threads", "torchvision"}`` for a torchvision model."""
    threads = config["threads"]
    if "torchvision" in config:
        torch.set_num_threads(threads)
        return {"threads": threads, **time_torchvision(config["torchvision"], images, args.device, args.warmup)}
    # Overlap: torch on one core fewer, the proposal thread on that core.
    torch.set_num_threads(threads - 1 if config["overlap"] else threads)
    return {"threads": threads, **time_sppdet(images, config["preset"], args.device, args.warmup,
                                              config["overlap"], args.model)}


def run_config_isolated(config: dict, args: argparse.Namespace) -> dict:
    """``run_config`` in a new process of this module (``--config``), as a command runs."""
    cmd = [sys.executable, "-m", "benchmarks.detect_speed", "--voc", str(args.voc), "--split", args.split,
           "--images", str(args.images), "--warmup", str(args.warmup), "--device", args.device,
           "--config", json.dumps(config)] + (["--model", str(args.model)] if args.model else [])
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"configuration {config} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def configs(args: argparse.Namespace) -> list[dict]:
    """The per-image configurations in order: per thread count, each preset serial (and with
    the proposal thread from two threads on), then torchvision's two detectors."""
    out: list[dict] = []
    for threads in args.threads:
        for preset in args.presets:
            for overlap in (False, True) if threads >= 2 else (False,):
                out.append({"threads": threads, "preset": preset, "overlap": overlap})
        if not args.no_torchvision:
            out += [{"threads": threads, "torchvision": name}
                    for name in ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn")]
    return out


def load_images(args: argparse.Namespace) -> list[tuple[str, np.ndarray]]:
    ds = VOCDataset(args.voc, split=args.split, limit=args.images)
    return [(i, ds.load_image(i)) for i in ds.ids]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voc", type=Path, default=DEFAULT_VOC)
    ap.add_argument("--split", default="val")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--presets", nargs="+", default=["model", "fast"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-torchvision", action="store_true")
    ap.add_argument("--overlap-images", type=int, default=0)
    ap.add_argument("--overlap-preset", default="model")
    ap.add_argument("--model", type=Path, default=None, help="model directory (default: the shipped one)")
    ap.add_argument("--in-process", action="store_true",
                    help="every per-image configuration in this process (default: each in its own)")
    ap.add_argument("--config", default=None, help=argparse.SUPPRESS)  # one configuration, JSON (internal)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "detect_speed.json")
    args = ap.parse_args(argv)
    try:  # before any configuration starts: "--device cuda" where there is none, say so
        resolve_device(args.device)
    except SppdetError as e:
        sys.exit(f"detect_speed: {e}")
    if not (args.voc / "JPEGImages").is_dir():
        print(f"skipped: VOC 2007 not found at {args.voc} (give --voc VOCdevkit/VOC2007)")
        sys.exit(0)
    tune_allocator()
    if args.config is not None:
        print(json.dumps(run_config(json.loads(args.config), load_images(args), args)))
        return
    images = load_images(args) if args.in_process else []
    result: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "load_average_start": os.getloadavg(), "torch": torch.__version__,
                    "device": args.device, "images": args.images, "split": args.split,
                    "warmup": args.warmup, "isolated": not args.in_process, "runs": []}
    for config in configs(args):
        row = run_config(config, images, args) if args.in_process else run_config_isolated(config, args)
        result["runs"].append(row)
        print(json.dumps(row), flush=True)
    if args.overlap_images:
        result["overlap"] = time_overlap(args.voc, args.split, args.overlap_images, args.device,
                                         max(args.threads), args.overlap_preset, args.model)
    result["load_average_end"] = os.getloadavg()
    ratios = {}
    for threads in args.threads:
        mine = [r for r in result["runs"] if r["threads"] == threads]
        runs = {(r["preset"], r["mode"]) if "preset" in r else r["model"]: r for r in mine}
        tv = runs.get("fasterrcnn_mobilenet_v3_large_fpn")
        for mode in ("serial", "overlap"):
            fast = runs.get(("fast", mode))
            if fast is None:
                continue
            if tv:
                ratios[f"fast_{mode}_vs_frcnn_large_fpn_{threads}t"] = round(
                    tv["total_median"] / fast["total_median"], 3)
            if mode == "serial":
                ratios[f"fast_pooling_over_conv_{threads}t"] = round(fast["pooling_median"] / fast["conv_median"], 4)
                ratios[f"fast_pooling_over_conv_per_image_{threads}t"] = round(fast["pooling_over_conv_median"], 4)
    result["ratios"] = ratios
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

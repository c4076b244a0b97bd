"""SPP-net vs R-CNN-style feature extraction, same backbone, same images, one run.

R-CNN style: crop each window, warp it to 224 x 224, run the conv trunk on every crop
(in batches). SPP: run the trunk once per image and scale (1 scale: 688; 5 scales:
480..1200), then map and pool the 2,000 windows from the maps.

R-CNN style is timed on an evenly spaced subset of the windows (``--rcnn-crops``, default
200 per image) and scaled linearly to all windows: its cost is per crop, the same for
every 224 x 224 crop. The JSON says so (``rcnn_extrapolated_from``).

Windows: OpenCV selective search ("fast") on each image, the first 2,000 boxes; images
with fewer get jittered copies of their own boxes (seeded) to reach 2,000.

Usage (from the repository root, with ../shared present):
    TORCH_HOME=$(realpath ../shared/weights) python benchmarks/spp_vs_rcnn.py
Prints JSON and writes benchmarks/results/spp_vs_rcnn.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sppdet.data import VOCDataset  # noqa: E402
from sppdet.features import FeatureCache, FeatureExtractor, get_backbone  # noqa: E402
from sppdet.features.pyramid import DEFAULT_SCALES, IMAGENET_MEAN, IMAGENET_STD, resized_shape  # noqa: E402
from sppdet.fileio import save_json  # noqa: E402
from sppdet.perf import tune_allocator  # noqa: E402

VOC = REPO.parent / "shared" / "data" / "VOCdevkit" / "VOC2007"


def proposals(image: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n internal boxes: selective search (fast), topped up with jittered copies."""
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(image)
    ss.switchToSelectiveSearchFast()
    r = ss.process().astype(np.float64)
    boxes = np.concatenate([r[:, :2], r[:, :2] + r[:, 2:]], axis=1)[:n]
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    while len(boxes) < n:
        src = boxes[rng.integers(len(boxes), size=n - len(boxes))]
        jitter = rng.normal(0, 0.1, src.shape) * np.repeat(src[:, 2:] - src[:, :2], 2, axis=1)
        extra = np.clip(src + jitter, 0, [w, h, w, h])
        extra = extra[(extra[:, 2] - extra[:, 0] >= 2) & (extra[:, 3] - extra[:, 1] >= 2)]
        boxes = np.concatenate([boxes, extra])[:n]
    return boxes


CPU_TIMES: dict[str, list[float]] = {}


def timed(fn, repeats: int, name: str) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls (after one warm-up call) and the last result;
    the median process CPU time goes to CPU_TIMES[name] (steadier on a shared machine)."""
    result = fn()
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    CPU_TIMES.setdefault(name, []).append(statistics.median(cpu))
    return statistics.median(times), result


def warp_crops(image: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
    """R-CNN style: crop every window and warp it to 224 x 224; RGB, ImageNet-normalised."""
    crops = np.empty((len(boxes), 224, 224, 3), dtype=np.uint8)
    h, w = image.shape[:2]
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        x1, y1 = int(max(0, np.floor(x1))), int(max(0, np.floor(y1)))
        x2, y2 = int(min(w, max(x1 + 1, np.ceil(x2)))), int(min(h, max(y1 + 1, np.ceil(y2))))
        crops[i] = cv2.resize(image[y1:y2, x1:x2], (224, 224), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(crops[..., ::-1].copy()).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def rcnn_conv(trunk: torch.nn.Module, crops: torch.Tensor, batch: int, device: torch.device) -> None:
    for s in range(0, len(crops), batch):
        trunk(crops[s:s + batch].to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voc", type=Path, default=VOC)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--windows", type=int, default=2000)
    ap.add_argument("--rcnn-crops", type=int, default=200)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-tune-allocator", action="store_true",
                    help="keep glibc's default mmap threshold (see sppdet.perf)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "spp_vs_rcnn.json")
    args = ap.parse_args()
    if not args.voc.is_dir():
        sys.exit(f"VOC data not found at {args.voc} (../shared is absent?)")
    allocator_tuned = tune_allocator() if not args.no_tune_allocator else False
    if args.threads:
        torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)

    backbone = get_backbone(args.backbone, args.weights)
    one = FeatureExtractor(backbone, (688,), device=args.device)
    five = FeatureExtractor(backbone, DEFAULT_SCALES, device=args.device)
    device = one.device
    ds = VOCDataset(args.voc, split="train", limit=args.images)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        caches = {1: FeatureCache.create(Path(tmp) / "one", one.config()),
                  5: FeatureCache.create(Path(tmp) / "five", five.config())}
        for k, image_id in enumerate(ds.ids):
            image = ds.load_image(image_id)
            boxes = proposals(image, args.windows, seed=k)
            row = {"image": image_id, "hw": list(image.shape[:2]), "windows": len(boxes)}
            for n, ex in ((1, one), (5, five)):  # input pixels of the pyramid
                row[f"spp{n}_pixels"] = sum(h * w for h, w in (resized_shape(image.shape[:2], s, ex.max_size)
                                                               for s in ex.scales))
            for n, ex in ((1, one), (5, five)):
                row[f"spp{n}_conv_s"], maps = timed(lambda: ex.conv_maps(image), args.repeats, f"spp{n}_conv_s")
                row[f"spp{n}_pool_s"], feats = timed(lambda: ex.pool(maps, boxes), args.repeats, f"spp{n}_pool_s")
                row[f"spp{n}_map_sizes"] = [list(m.shape[1:]) for m in maps.maps]
                row[f"cache{n}_bytes"] = caches[n].save(image_id, maps).stat().st_size
                row["feature_dim"] = int(feats.shape[1])
            subset = boxes[np.linspace(0, len(boxes) - 1, args.rcnn_crops).round().astype(int)]
            warp_s, crops = timed(lambda: warp_crops(image, subset), 1, "rcnn_warp_s")
            conv_s, _ = timed(lambda: rcnn_conv(backbone.trunk, crops, args.batch, device), 1, "rcnn_conv_s")
            scale = len(boxes) / len(subset)
            for key in ("rcnn_warp_s", "rcnn_conv_s"):
                CPU_TIMES[key][-1] *= scale
            row.update(rcnn_warp_s=warp_s * scale, rcnn_conv_s=conv_s * scale)
            rows.append(row)
            print(f"{image_id}: spp1 conv {row['spp1_conv_s']:.3f} s pool {row['spp1_pool_s']:.3f} s; "
                  f"spp5 conv {row['spp5_conv_s']:.3f} s pool {row['spp5_pool_s']:.3f} s; "
                  f"rcnn warp {row['rcnn_warp_s']:.2f} s conv {row['rcnn_conv_s']:.2f} s", file=sys.stderr)

    med = {key: statistics.median(r[key] for r in rows) for key in rows[0]
           if key.endswith("_s") or key.endswith("_bytes") or key.endswith("_pixels")}
    rcnn_pixels = args.windows * 224 * 224
    rcnn_total = med["rcnn_warp_s"] + med["rcnn_conv_s"]
    cpu = {k: statistics.median(v) for k, v in CPU_TIMES.items()}
    result = {
        "benchmark": "spp_vs_rcnn",
        "command": "python " + " ".join(sys.argv),
        "backbone": args.backbone, "weights": backbone.weights, "layer": backbone.layer,
        "device": str(device), "torch_threads": torch.get_num_threads(),
        "allocator_tuned": allocator_tuned,
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "images": len(rows), "windows_per_image": args.windows, "feature_dim": rows[0]["feature_dim"],
        "rcnn_extrapolated_from": f"{args.rcnn_crops} crops per image, scaled linearly to {args.windows}",
        "rcnn_batch": args.batch,
        "median_seconds_per_image": {k: round(v, 4) for k, v in med.items() if k.endswith("_s")},
        "median_cpu_seconds_per_image": {k: round(v, 4) for k, v in cpu.items()},
        "speedup_conv_step": {"1_scale": round(med["rcnn_conv_s"] / med["spp1_conv_s"], 1),
                              "5_scales": round(med["rcnn_conv_s"] / med["spp5_conv_s"], 1)},
        "speedup_with_warp_and_pooling": {
            "1_scale": round(rcnn_total / (med["spp1_conv_s"] + med["spp1_pool_s"]), 1),
            "5_scales": round(rcnn_total / (med["spp5_conv_s"] + med["spp5_pool_s"]), 1)},
        "speedup_conv_step_cpu_time": {"1_scale": round(cpu["rcnn_conv_s"] / cpu["spp1_conv_s"], 1),
                                       "5_scales": round(cpu["rcnn_conv_s"] / cpu["spp5_conv_s"], 1)},
        "pooling_over_conv_cpu_time": {"1_scale": round(cpu["spp1_pool_s"] / cpu["spp1_conv_s"], 4),
                                       "5_scales": round(cpu["spp5_pool_s"] / cpu["spp5_conv_s"], 4)},
        "pooling_over_conv": {"1_scale": round(med["spp1_pool_s"] / med["spp1_conv_s"], 4),
                              "5_scales": round(med["spp5_pool_s"] / med["spp5_conv_s"], 4)},
        "spp_share_outside_conv": {
            "1_scale": round(med["spp1_pool_s"] / (med["spp1_conv_s"] + med["spp1_pool_s"]), 4),
            "5_scales": round(med["spp5_pool_s"] / (med["spp5_conv_s"] + med["spp5_pool_s"]), 4)},
        # The speed-up a pixel-proportional cost would give (R-CNN's 2,000 x 224^2 input
        # pixels over the pyramid's), and the measured cost per input pixel of each path.
        "pixel_ratio": {"1_scale": round(rcnn_pixels / med["spp1_pixels"], 1),
                        "5_scales": round(rcnn_pixels / med["spp5_pixels"], 1)},
        "conv_ns_per_input_pixel": {"rcnn": round(1e9 * med["rcnn_conv_s"] / rcnn_pixels, 1),
                                    "spp_1_scale": round(1e9 * med["spp1_conv_s"] / med["spp1_pixels"], 1),
                                    "spp_5_scales": round(1e9 * med["spp5_conv_s"] / med["spp5_pixels"], 1)},
        "cache_bytes_per_image": {"1_scale": int(med["cache1_bytes"]), "5_scales": int(med["cache5_bytes"]),
                                  "pooled_float32_instead": args.windows * rows[0]["feature_dim"] * 4},
        "per_image": rows,
    }
    result["targets"] = {
        "conv_speedup_1_scale_ge_100": result["speedup_conv_step"]["1_scale"] >= 100,
        "conv_speedup_5_scales_ge_20": result["speedup_conv_step"]["5_scales"] >= 20,
        "pooling_le_10pct_of_conv_1_scale": result["pooling_over_conv"]["1_scale"] <= 0.10,
        "pooling_le_10pct_of_conv_5_scales": result["pooling_over_conv"]["5_scales"] <= 0.10,
    }
    save_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "per_image"}, indent=2))


if __name__ == "__main__":
    main()

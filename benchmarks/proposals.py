"""Benchmark the proposal methods: recall of ground truth and seconds per image on one core.

For a fixed, seeded subset of a VOC split, each method proposes boxes for every image in
this one process with OpenCV on one thread (per-core timing; the image is read before the
clock starts). Reported per method: recall of non-difficult ground-truth boxes at IoU 0.5
and 0.7 among the top 100 / 500 / 1000 / 2000 boxes, mean boxes per image, median seconds
per image. Selective search "quality" is much slower, so it runs on the first
--n-quality images of the subset; every method is also reported on that smaller subset so
the three can be compared on the same images. Prints JSON and writes it to --out.

    python benchmarks/proposals.py --n 200 --n-quality 50 --seed 1

Seed 1 by default: the subset of seed 0 was used to choose selective search's k and the
minimum box side (docs/proposals.md), so the reported numbers come from other images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from proposals import CommonOptions, create_method  # noqa: E402
from sppdet.boxes import box_iou  # noqa: E402
from sppdet.data import VOCDataset  # noqa: E402
from sppdet.fileio import save_json  # noqa: E402

TOP_K = (100, 500, 1000, 2000)
IOUS = (0.5, 0.7)


def per_image(method, dataset: VOCDataset, ids: list[str]) -> list[dict]:
    """Seconds, box count and best IoU (at each top-k) of every non-difficult GT box."""
    rows = []
    for image_id in ids:
        image = dataset.load_image(image_id)
        ann = dataset.annotation(image_id)
        start = time.perf_counter()
        props = method(image)
        seconds = time.perf_counter() - start
        gt = ann.boxes[~ann.difficult]
        iou = box_iou(gt, props.boxes) if len(props) else np.zeros((len(gt), 0))
        best = {k: (iou[:, :k].max(axis=1) if iou.shape[1] else np.zeros(len(gt))).tolist()
                for k in TOP_K}
        rows.append({"image_id": image_id, "seconds": seconds, "boxes": len(props), "best_iou": best})
    return rows


def summarise(rows: list[dict]) -> dict:
    """Recall at each IoU threshold and top-k, mean boxes, median seconds."""
    recall = {}
    for thr in IOUS:
        for k in TOP_K:
            hits = [v >= thr for r in rows for v in r["best_iou"][k]]
            recall[f"iou{thr}@{k}"] = round(float(np.mean(hits)), 4) if hits else None
    return {
        "images": len(rows),
        "gt_boxes": sum(len(r["best_iou"][TOP_K[0]]) for r in rows),
        "recall": recall,
        "mean_boxes_per_image": round(statistics.fmean(r["boxes"] for r in rows), 1),
        "median_seconds_per_image": round(statistics.median(r["seconds"] for r in rows), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voc", type=Path, default=REPO.parent / "shared/data/VOCdevkit/VOC2007")
    parser.add_argument("--split", default="train")
    parser.add_argument("--n", type=int, default=200, help="images in the seeded subset")
    parser.add_argument("--n-quality", type=int, default=50,
                        help="images (the first of the subset) for ss-quality")
    parser.add_argument("--seed", type=int, default=1,
                        help="subset seed (seed 0's subset was used to choose ss defaults)")
    parser.add_argument("--methods", default="ss-fast,edgeboxes,ss-quality")
    parser.add_argument("--max-boxes", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/proposals.json")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    dataset = VOCDataset(args.voc, split=args.split)
    subset = random.Random(args.seed).sample(sorted(dataset.ids), args.n)
    common = CommonOptions(max_boxes=args.max_boxes)
    n_small = min(args.n_quality, args.n)
    results: dict = {
        "command": "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]]),
        "data": f"{dataset.root} split {args.split}: {args.n} images sampled with "
                f"random.Random({args.seed}).sample(sorted ids); ss-quality on the first {n_small}",
        "machine": {"cpu": platform.processor() or platform.machine(), "opencv": cv2.__version__,
                    "opencv_threads": cv2.getNumThreads(), "cores_visible": os.cpu_count()},
        "methods": {},
    }
    for name in args.methods.split(","):
        method = create_method(name, common)
        ids = subset[:n_small] if name == "ss-quality" else subset
        print(f"{name}: {len(ids)} images ...", file=sys.stderr, flush=True)
        rows = per_image(method, dataset, ids)
        results["methods"][name] = {"params": method.params, **summarise(rows),
                                    f"on_first_{n_small}": summarise(rows[:n_small])}
    m = results["methods"]
    if "ss-fast" in m and "edgeboxes" in m:
        results["speedup_edgeboxes_vs_ss_fast"] = round(
            m["ss-fast"]["median_seconds_per_image"] / m["edgeboxes"]["median_seconds_per_image"], 2)
    save_json(args.out, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

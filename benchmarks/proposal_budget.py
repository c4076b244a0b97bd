"""mAP against the number of proposals scored per image (what fewer windows cost).

Evaluates one model on one set of images with each image's proposals capped at each of
``--keep`` (the first K in the proposal method's ranking, ``sppdet eval --max-proposals``),
reusing the proposal and feature caches, and reports VOC07 11-point mAP, the mean number of
windows scored and the wall time of each run, in one process.

Prints JSON and writes ``--out`` (default benchmarks/results/proposal_budget.json).

    python -m benchmarks.proposal_budget --model CACHE/model_convr8000_688 \\
        --proposals CACHE/voc07_ss --features CACHE/voc07_mnv2_688 \\
        --ids splits/voc07_valsplit_val.txt --keep 250 500 1000 2000
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sppdet.data import VOCDataset
from sppdet.evaluation.pipeline import evaluate
from sppdet.features.proposal_files import ProposalFiles

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VOC = REPO.parent / "shared" / "data" / "VOCdevkit" / "VOC2007"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--proposals", required=True, type=Path, help="proposal cache of the images")
    ap.add_argument("--features", type=Path, default=None, help="feature cache (else maps are computed)")
    ap.add_argument("--voc", type=Path, default=DEFAULT_VOC)
    ap.add_argument("--ids", type=Path, default=REPO / "splits" / "voc07_valsplit_val.txt")
    ap.add_argument("--keep", type=int, nargs="+", default=[250, 500, 1000, 2000])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "proposal_budget.json")
    args = ap.parse_args(argv)
    if not args.voc.is_dir():
        print(json.dumps({"skipped": f"no VOC data at {args.voc}"}))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    from sppdet.data.voc import read_id_list

    dataset = VOCDataset(args.voc, ids=read_id_list(args.ids))
    cache = ProposalFiles(args.proposals)
    counts = np.array([len(cache.load(i)) for i in dataset.ids])
    rows = []
    for k in sorted(args.keep):
        start = time.perf_counter()
        report = evaluate(dataset, model_dir=args.model, proposals_dir=args.proposals,
                          features_dir=args.features, device="cpu", coco_metrics=False,
                          progress=False, max_proposals=k)
        seconds = time.perf_counter() - start
        rows.append({"keep": k, "mean_windows": round(float(np.minimum(counts, k).mean()), 1),
                     "mAP": round(100 * report.voc.mAP, 2), "seconds": round(seconds, 1),
                     "seconds_per_image": round(seconds / len(dataset.ids), 4)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"model": str(args.model), "proposals": str(args.proposals), "ids": str(args.ids),
              "images": len(dataset.ids), "mean_proposals": round(float(counts.mean()), 1),
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "command": "python -m benchmarks.proposal_budget " + " ".join(argv or sys.argv[1:]),
              "runs": rows}
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

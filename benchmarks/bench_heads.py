"""Timing of the head-training steps at VOC sizes, on synthetic features (timing only).

Measures, on this machine, with D = 4800 (MobileNetV2 features[:14], 96 channels x 50 bins):
- one LinearSVC retrain (C = 0.001, hinge, dual, tol 0.1) for P positives and N cached
  negatives, the step mining repeats every ~2,000 new negatives per class;
- scoring one image's 2,000 windows against 20 SVMs (one matrix product);
- fc fine-tuning: seconds per mini-batch of 128 (fc6/fc7 of width H), and the fc7
  transform of one image's 2,000 windows.
Features are non-negative (like max-pooled activations) with a weak class signal, so the
SVM has to work; absolute numbers depend on the real features.

    /tmp/venv/bin/python -m benchmarks.bench_heads [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from sppdet.heads.fc_head import FcHead
from sppdet.heads.svm import SVMParams, fit_linear_svm

D = 4800


def timed(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def features(rng: np.random.Generator, n: int, signal: np.ndarray, strength: float) -> np.ndarray:
    x = np.maximum(rng.normal(0, 1, (n, D)), 0) + strength * signal
    return (x * (20 / np.sqrt(D * 0.5))).astype(np.float16)  # mean norm about 20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    signal = np.maximum(rng.normal(0, 1, D), 0)
    repeat = 1 if args.quick else 3
    results: dict = {"machine": platform.processor() or platform.machine(),
                     "torch_threads": torch.get_num_threads(), "dim": D}

    svm = []
    pos = features(rng, 500, signal, 0.5)
    for n_neg in ([2000, 8000] if args.quick else [2000, 8000, 20000]):
        neg = features(rng, n_neg, signal, 0.0)
        sec = timed(lambda: fit_linear_svm(pos, neg, SVMParams()), repeat)
        svm.append({"positives": 500, "negatives": n_neg, "fit_s": round(sec, 3)})
    results["svm_retrain"] = svm

    x = features(rng, 2000, signal, 0.0).astype(np.float32)
    W = rng.normal(0, 0.01, (20, D)).astype(np.float32)
    results["score_2000x20_s"] = round(timed(lambda: x @ W.T, 5), 5)

    fc_rows = []
    for hidden in (512, 1024):
        fc = FcHead(D, hidden, 20)
        opt = torch.optim.SGD(fc.parameters(), lr=0.01, momentum=0.9)
        xb = torch.from_numpy(features(rng, 128, signal, 0.0).astype(np.float32))
        yb = torch.from_numpy(rng.integers(0, 21, 128))

        def step():
            loss = torch.nn.functional.cross_entropy(fc(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        per_batch = timed(lambda: [step() for _ in range(20)], repeat) / 20
        fc7 = timed(lambda: fc.fc7_numpy(x), repeat)
        fc_rows.append({"hidden": hidden, "batch_128_s": round(per_batch, 4),
                        "iterations_per_10min": int(600 / per_batch),
                        "fc7_2000_windows_s": round(fc7, 3)})
    results["fc"] = fc_rows
    print(json.dumps(results, indent=2))
    out = Path(__file__).resolve().parent / "results" / "bench_heads.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

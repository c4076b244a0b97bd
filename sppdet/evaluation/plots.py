"""Precision-recall curves of every class in one PNG (matplotlib, Agg canvas; the global
pyplot backend is left alone)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from sppdet.evaluation.voc import EvalResult
from sppdet.fileio import atomic_path


def plot_pr_curves(result: EvalResult, path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw each class's ranked precision-recall curve and its interpolated envelope in a
    grid of subplots, titled with the class's APs; write the PNG atomically to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = result.class_names
    ncols = max(1, math.ceil(math.sqrt(len(names))))
    nrows = max(1, math.ceil(len(names) / ncols))
    fig = Figure(figsize=(3.0 * ncols, 2.6 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        ev = result.per_class[name]
        if ev.npos and ev.ndet:
            envelope = np.maximum.accumulate(ev.prec[::-1])[::-1]
            ax.plot(ev.rec, ev.prec, lw=1.0, color="tab:blue", label="ranked")
            ax.plot(ev.rec, envelope, lw=1.0, ls="--", color="tab:orange", label="interpolated")
        if ev.npos:
            ax.set_title(f"{name}: AP07 {100 * ev.ap07:.1f}, area {100 * ev.ap_area:.1f}", fontsize=8)
        else:
            ax.set_title(f"{name}: no ground truth", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("recall", fontsize=7)
        ax.set_ylabel("precision", fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    fig.suptitle(title or f"VOC07 mAP {100 * result.mAP:.1f} (11-point), {100 * result.mAP_area:.1f} (area)")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path

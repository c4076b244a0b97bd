"""Wall-clock time per detection stage: an optional hook the detector reports into.

``Detector(..., timer=StageTimer())`` (or ``detector.timer = StageTimer()``) adds the
seconds of every stage of every image to ``timer.seconds`` (proposals, conv, pooling,
scoring, bbox_reg, nms); ``benchmarks/detect_speed.py`` reads them. Without a timer the
detector times nothing. On a CUDA device each stage ends with a synchronisation, so that a
stage's kernels are counted in that stage (only when a timer is set: timing costs speed).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator

import torch

# The stages the detector reports, in pipeline order.
STAGES = ("proposals", "conv", "pooling", "scoring", "bbox_reg", "nms")


class StageTimer:
    """Accumulated seconds per stage name, and how many times each stage ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextlib.contextmanager
    def stage(self, name: str, device: torch.device | None = None) -> Iterator[None]:
        """Time the block as stage ``name`` (synchronising ``device`` first and last if CUDA)."""
        sync = device is not None and device.type == "cuda"
        if sync:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if sync:
                torch.cuda.synchronize(device)
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def total(self) -> float:
        return float(sum(self.seconds.values()))


@contextlib.contextmanager
def _untimed() -> Iterator[None]:
    yield


def stage(timer: StageTimer | None, name: str, device: torch.device | None = None
          ) -> contextlib.AbstractContextManager[None]:
    """``timer.stage(name, device)``, or a no-op context when ``timer`` is None."""
    return _untimed() if timer is None else timer.stage(name, device)

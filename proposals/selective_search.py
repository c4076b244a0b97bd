"""Selective search (Uijlings et al. 2013) through OpenCV's ``cv2.ximgproc.segmentation``.

Order of the boxes. OpenCV ranks every region of every hierarchical grouping by
``level * rand()`` (the paper's pseudo-random ranking: ``rand()`` from the C library), sorts
by that rank and drops exact duplicate rectangles. We keep that order, so "top k" means the
first k of it, as in the original selective search code and R-CNN. To make it reproducible,
the C library's generator is seeded with ``seed`` immediately before every image and
OpenCV runs on one thread for the call (restored afterwards); the same image and
parameters then give the same boxes in the same order. Scores are rank-derived
(1, (n-1)/n, ...), since selective search has none.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import warnings
from typing import Any, Callable

import cv2
import numpy as np

from proposals.base import CommonOptions, ProposalMethod, register
from proposals.errors import ProposalError
from proposals.boxes import xywh_to_xyxy
from proposals.postprocess import rank_scores
from proposals.threads import opencv_threads

MODES = ("fast", "quality")


@functools.lru_cache(maxsize=1)
def _c_srand() -> Callable[[int], None] | None:
    """The C library's ``srand`` (the generator OpenCV's selective search draws from)."""
    for name in (ctypes.util.find_library("c"), "libc.so.6", "msvcrt"):
        if not name:
            continue
        try:
            fn = ctypes.CDLL(name).srand
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_uint]
        fn.restype = None
        return fn
    warnings.warn("C library srand not found: selective search box order is not reproducible",
                  RuntimeWarning, stacklevel=2)
    return None


class SelectiveSearch(ProposalMethod):
    """OpenCV selective search in "fast" or "quality" mode (boxes in OpenCV's rank order).

    Graph segmentations use k = base_k + i * inc_k (i = 0, 1, 2 in fast mode; more in
    quality mode). The default base_k = inc_k = 100 (k = 100, 200, 300) is finer than
    OpenCV's 150 (k = 150, 300, 450) and closer to the paper's fast mode (k = 50, 100):
    on 200 VOC 2007 train images it raised recall at IoU 0.5 with 2,000 boxes from 0.942
    to 0.958 (with min_side 16), at about the same speed (docs/benchmarks.md).
    """

    def __init__(
        self,
        mode: str = "fast",
        *,
        base_k: int = 100,
        inc_k: int = 100,
        sigma: float = 0.8,
        seed: int = 1,
        common: CommonOptions | None = None,
    ) -> None:
        super().__init__(common)
        if mode not in MODES:
            raise ProposalError(f"selective search mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.name = f"ss-{mode}"
        self.base_k, self.inc_k, self.sigma, self.seed = int(base_k), int(inc_k), float(sigma), int(seed)

    def method_params(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "opencv": cv2.__version__,
            "base_k": self.base_k,
            "inc_k": self.inc_k,
            "sigma": self.sigma,
            "seed": self.seed,
            "order": "opencv-rank (level x seeded C rand), deduplicated",
        }

    def _propose(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with opencv_threads(1):
            ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
            ss.setBaseImage(image_bgr)
            if self.mode == "fast":
                ss.switchToSelectiveSearchFast(self.base_k, self.inc_k, self.sigma)
            else:
                ss.switchToSelectiveSearchQuality(self.base_k, self.inc_k, self.sigma)
            srand = _c_srand()
            if srand is not None:
                srand(self.seed)
            rects = ss.process()
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        return xywh_to_xyxy(rects), rank_scores(len(rects))


@register("ss-fast")
def _ss_fast(common: CommonOptions | None = None, **options: Any) -> SelectiveSearch:
    return SelectiveSearch("fast", common=common, **options)


@register("ss-quality")
def _ss_quality(common: CommonOptions | None = None, **options: Any) -> SelectiveSearch:
    return SelectiveSearch("quality", common=common, **options)

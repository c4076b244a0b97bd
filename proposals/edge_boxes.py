"""EdgeBoxes (Zitnick & Dollar 2014) through OpenCV's ``cv2.ximgproc.createEdgeBoxes``.

The edge map comes from ``proposals.edges``: OpenCV's structured-forest detector when its
model is given, otherwise the documented Sobel-Canny fallback; the detector in use is
recorded in ``params["edges"]``. Boxes are ordered by EdgeBoxes' score, best first.
OpenCV returns 1-based corners (see ``edgeboxes_rects_to_xyxy``).
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from proposals.base import CommonOptions, ProposalMethod, register
from proposals.edges import edge_detector
from proposals.threads import opencv_threads


def edgeboxes_rects_to_xyxy(rects: np.ndarray) -> np.ndarray:
    """OpenCV EdgeBoxes rectangles -> internal (x1, y1, x2, y2).

    OpenCV's EdgeBoxes (a port of Dollar's MATLAB code) scores a box covering the 0-based
    pixels x0 .. x0 + w inclusive and returns ``Rect(x0 + 1, y0 + 1, w, h)``: a 1-based
    corner. So a returned (x, y, w, h) covers [x - 1, x + w) x [y - 1, y + h).
    """
    b = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0] - 1, b[:, 1] - 1, b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)


@register("edgeboxes")
class EdgeBoxes(ProposalMethod):
    """EdgeBoxes on a thin edge map; alpha/beta/min_score are OpenCV's parameters."""

    name = "edgeboxes"

    def __init__(
        self,
        *,
        edge_model: str | os.PathLike | None = None,
        alpha: float = 0.65,
        beta: float = 0.75,
        min_score: float = 0.01,
        common: CommonOptions | None = None,
    ) -> None:
        super().__init__(common)
        self.edges = edge_detector(edge_model)
        self.alpha, self.beta, self.min_score = float(alpha), float(beta), float(min_score)

    def method_params(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "opencv": cv2.__version__,
            "alpha": self.alpha,
            "beta": self.beta,
            "min_score": self.min_score,
            **self.edges.params(),
        }

    def _propose(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with opencv_threads(1):
            edges, orientation = self.edges(image_bgr)
            eb = cv2.ximgproc.createEdgeBoxes(alpha=self.alpha, beta=self.beta, minScore=self.min_score)
            # Ask for spare boxes: clipping, the minimum side and dedupe remove some.
            eb.setMaxBoxes(int(self.common.max_boxes * 2))
            rects, scores = eb.getBoundingBoxes(edges, orientation)
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        # OpenCV returns ((), None) when it finds no box.
        scores = np.asarray(scores if len(rects) else [], dtype=np.float64).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        return edgeboxes_rects_to_xyxy(rects[order]), scores[order]

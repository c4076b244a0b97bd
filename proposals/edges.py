"""Edge and orientation maps for EdgeBoxes.

Two detectors behind one call, ``detector(image_bgr) -> (edges, orientation)``, both float32
HxW, edges in [0, 1] and thin (non-maximum suppressed), orientation in [0, pi):

- ``StructuredEdges``: OpenCV's structured-forest detector (Dollar & Zitnick), the edge map
  EdgeBoxes was designed for. Needs the trained model ``model.yml.gz`` (from OpenCV's extra
  test data), which is not shipped: pass its path, or set ``SPPDET_EDGE_MODEL``.
- ``SobelCannyEdges``: the fallback when no model is available. Sobel gradient magnitude
  of the smoothed grey image, normalised by a high percentile, kept only on Canny edge
  pixels (so it is thin). Orientation is computed from the edge map as in Dollar's code.
  It is a hand-made substitute, not the detector of the EdgeBoxes paper; its recall is
  measured in docs/benchmarks.md.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from proposals.errors import ProposalError

EDGE_MODEL_ENV = "SPPDET_EDGE_MODEL"


def orientation_from_edges(edges: np.ndarray) -> np.ndarray:
    """Orientation in [0, pi) of the edge normal, computed from an edge map.

    As in Dollar's code, the map is triangle-smoothed (radius 4) and its second derivatives
    taken; across a ridge of the map the Hessian is about f'' n n^T (f'' < 0), so the normal
    n is the eigenvector of the most negative eigenvalue, at angle
    0.5 * atan2(-2 Oxy, Oyy - Oxx). (Dollar's ``atan(Oyy * sign(-Oxy) / Oxx)`` equals
    atan(tan^2 theta): exact only at multiples of 45 degrees.) EdgeBoxes expects the normal:
    its affinity compares orientations with the perpendicular of the line between groups.
    """
    tri = np.array([1, 2, 3, 4, 5, 4, 3, 2, 1], dtype=np.float32) / 25.0
    e = cv2.sepFilter2D(edges.astype(np.float32), -1, tri, tri, borderType=cv2.BORDER_REFLECT)
    oy, ox = np.gradient(e)
    _, oxx = np.gradient(ox)
    oyy, oxy = np.gradient(oy)
    o = 0.5 * np.arctan2(-2.0 * oxy, oyy - oxx)
    return np.mod(o, np.pi).astype(np.float32)


class SobelCannyEdges:
    """Fallback edge detector: Sobel magnitude masked by Canny edges (thin)."""

    kind = "sobel-canny-fallback"

    def __init__(self, blur_sigma: float = 1.5, canny_low: int = 50, canny_high: int = 150,
                 percentile: float = 99.0) -> None:
        self.blur_sigma = float(blur_sigma)
        self.canny_low, self.canny_high = int(canny_low), int(canny_high)
        self.percentile = float(percentile)

    def params(self) -> dict[str, Any]:
        return {"edges": self.kind, "blur_sigma": self.blur_sigma, "canny_low": self.canny_low,
                "canny_high": self.canny_high, "norm_percentile": self.percentile}

    def __call__(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
        # One blur for both: it removes texture edges, which make EdgeBoxes slow.
        blurred = cv2.GaussianBlur(gray, (0, 0), self.blur_sigma)
        g = blurred.astype(np.float32) / 255.0
        gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
        # Not cv2.magnitude: its last bits depend on the arrays' memory alignment.
        mag = np.sqrt(gx * gx + gy * gy)
        thin = cv2.Canny(blurred, self.canny_low, self.canny_high) > 0
        edges = np.zeros_like(mag)
        if thin.any():
            norm = float(np.percentile(mag[thin], self.percentile))
            edges[thin] = np.minimum(mag[thin] / max(norm, 1e-6), 1.0)
        return edges, orientation_from_edges(edges)


class StructuredEdges:
    """OpenCV's structured-forest edges with non-maximum suppression (needs the model)."""

    kind = "structured-forest"

    def __init__(self, model_path: str | os.PathLike) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise ProposalError(f"{path}: structured edge model not found (set --edge-model or "
                                f"{EDGE_MODEL_ENV} to OpenCV's model.yml.gz)")
        self.model_path = path
        self.model_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            self._sed = cv2.ximgproc.createStructuredEdgeDetection(str(path))
        except cv2.error as e:
            raise ProposalError(f"{path}: cannot load structured edge model ({e})") from None

    def params(self) -> dict[str, Any]:
        return {"edges": self.kind, "edge_model_sha256": self.model_sha256}

    def __call__(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        edges = self._sed.detectEdges(rgb)
        orientation = self._sed.computeOrientation(edges)
        edges = self._sed.edgesNms(edges, orientation)
        return edges, orientation

    def __getstate__(self) -> dict[str, Any]:  # the OpenCV object does not pickle
        return {"model_path": self.model_path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model_path"])  # type: ignore[misc]


def edge_detector(model_path: str | os.PathLike | None = None) -> SobelCannyEdges | StructuredEdges:
    """The structured-forest detector when a model is given (argument, else the
    ``SPPDET_EDGE_MODEL`` environment variable), the Sobel-Canny fallback otherwise."""
    path = model_path or os.environ.get(EDGE_MODEL_ENV) or None
    return StructuredEdges(path) if path else SobelCannyEdges()

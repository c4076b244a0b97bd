"""A proposal method whose worker process kills itself (SIGKILL) on one marked image: the
test stand-in for a worker killed by the system for memory."""

from __future__ import annotations

import os
import signal
from typing import Any

import numpy as np

from proposals.base import ProposalMethod

KILL_VALUE = 7  # an image whose top-left pixel is (7, 7, 7) kills its worker


class DyingMethod(ProposalMethod):
    name = "test-dying"

    def __init__(self, common=None, kill: bool = True) -> None:
        super().__init__(common)
        self.kill = kill

    def _propose(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.kill and (image_bgr[0, 0] == KILL_VALUE).all():
            os.kill(os.getpid(), signal.SIGKILL)
        h, w = image_bgr.shape[:2]
        boxes = np.array([[0, 0, w, h], [0, 0, w / 2, h / 2]], np.float32)
        return boxes, np.array([1.0, 0.5], np.float32)

    def method_params(self) -> dict[str, Any]:
        return {}  # the same cache whether or not it kills

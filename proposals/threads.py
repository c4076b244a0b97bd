"""OpenCV's thread count, set for a block of code and restored after it."""

from __future__ import annotations

import contextlib
from typing import Iterator

import cv2


@contextlib.contextmanager
def opencv_threads(n: int = 1) -> Iterator[None]:
    """Run the block with ``cv2.setNumThreads(n)``, then restore the previous count (also on
    an exception). Proposal methods run on one thread; parallelism comes from processes."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)

"""Region proposals (selective search, EdgeBoxes) behind one interface, and their cache.

Imports OpenCV and numpy only (never torch, never sppdet)::

    from proposals import create_method, CommonOptions, ProposalCache
    method = create_method("ss-fast", CommonOptions(max_boxes=2000))
    props = method(image_bgr)          # Proposals(boxes (N, 4) float32 x1y1x2y2, scores (N,))
    ProposalCache(DIR).load(image_id)  # boxes of one image from a cache directory
"""

from proposals.base import (DEFAULT_METHOD, CommonOptions, ProposalMethod, available_methods, create_method,
                            create_method_from_params, method_options, register)
from proposals.cache import ProposalCache
from proposals.errors import (CacheMismatchError, CacheMissingError, ImageReadError, ProposalError,
                             WorkerDiedError)
from proposals.postprocess import Proposals
from proposals.runner import Outcome, RunSummary, run_proposals

__all__ = [
    "DEFAULT_METHOD",
    "CacheMismatchError",
    "CacheMissingError",
    "CommonOptions",
    "ImageReadError",
    "Outcome",
    "ProposalCache",
    "ProposalError",
    "ProposalMethod",
    "Proposals",
    "RunSummary",
    "available_methods",
    "create_method",
    "create_method_from_params",
    "method_options",
    "register",
    "run_proposals",
    "WorkerDiedError",
]

"""Test-time defaults shared by the detector, the model directory and the commands.

Each number is written here once; the modules that use it import it. Defaults that belong
to one stage live with that stage's parameter dataclass (``SVMParams``, ``MiningParams``,
``BoxRegParams``, ``TrainParams``, ``FinetuneParams``, ``proposals.CommonOptions``) or its
module (``features.pyramid.DEFAULT_SCALES`` / ``DEFAULT_MAX_SIZE``,
``features.spp.DEFAULT_LEVELS``), and the commands read them from there.
"""

from __future__ import annotations

# The official SPP-net code's test settings: every window scoring above SCORE_THRESHOLD
# enters per-class NMS at NMS_IOU; the best MAX_PER_IMAGE detections of an image are kept.
SCORE_THRESHOLD = -1.5
NMS_IOU = 0.3
MAX_PER_IMAGE = 100

# SVM score above which a detection is shown (`sppdet detect`, ``Detector.load``) when
# neither an explicit threshold nor the model's display thresholds say otherwise.
DISPLAY_THRESHOLD = -0.5

# Detection and evaluation apply the model's box regression (when it has one).
BBOX_REG = True

# Proposal worker processes of detection and evaluation in the Python API (0: proposals in
# this process); the commands choose with ``auto_proposal_workers`` unless given --workers.
PROPOSAL_WORKERS = 0


def auto_proposal_workers(cores: int, images: int) -> int:
    """Worker processes for the proposals of ``images`` images on ``cores`` cores: none for
    one image or one core; else three quarters of the cores (2 on 2 cores, where
    ``eval --model`` ran 1.74-1.78x the serial throughput against 1.2x with the proposal
    thread: docs/benchmarks.md), torch on the rest (at least one)."""
    if cores < 2 or images < 2:
        return 0
    return cores - cores // 4

# Proposals in a second thread beside the conv pass (torch gets one core fewer): --overlap/--serial.
OVERLAP_PROPOSALS = True

# The one conv scale of single-scale models and of the fast preset (shorter side, pixels).
SINGLE_SCALE: tuple[int, ...] = (688,)

# `sppdet eval` / ``sppdet.evaluate`` also compute COCO AP@[0.5:0.95] (pycocotools).
COCO_METRICS = True

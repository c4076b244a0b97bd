"""sppdet: SPP-net object detection (He et al., 2014) on modern PyTorch.

Pipeline: proposals -> conv maps once per image and scale -> spatial pyramid pooling
-> linear SVMs (+ box regression) -> NMS -> PASCAL VOC evaluation.
"""

__version__ = "0.1.0"

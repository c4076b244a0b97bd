"""The fully connected head trained on pooled features: fc6 -> fc7 -> (classes + 1) logits.

As in SPP-net's fine-tuning, the conv layers stay fixed (their features come from the
cache); only fc6, fc7 (ReLU, dropout) and a new (C + 1)-way classifier (0 = background)
are trained. For detection, fc7's post-ReLU activations are the SVMs' features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class FcHead(nn.Module):
    """fc6 -> ReLU -> dropout -> fc7 -> ReLU -> dropout -> cls (num_classes + 1), and with
    ``bbox=True`` a sibling ``bbox_pred`` (4 per class) on the same fc7 output (Fast R-CNN)."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int, dropout: float = 0.5,
                 init_std: float | None = None, bbox: bool = False) -> None:
        """``init_std``: Gaussian weights of that std and zero biases (Caffe's filler for new
        layers); None keeps PyTorch's default (Kaiming-uniform) initialisation. ``bbox``:
        add the class-specific box-delta output (initialised as Fast R-CNN's, std 0.001)."""
        super().__init__()
        self.in_dim, self.hidden, self.num_classes, self.dropout = in_dim, hidden, num_classes, dropout
        self.init_std = init_std
        self.has_bbox = bool(bbox)
        # (U (hidden, t), V (t, in_dim), version) when fc6 was stored at rank t (fc6.weight ==
        # U @ V): inference may multiply by V then U (``heads.scoring``). Not in the state dict.
        self._fc6_factors: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self.fc6 = nn.Linear(in_dim, hidden)
        self.fc7 = nn.Linear(hidden, hidden)
        self.cls = nn.Linear(hidden, num_classes + 1)
        self.drop = nn.Dropout(dropout)
        if init_std is not None:
            for layer in (self.fc6, self.fc7, self.cls):
                nn.init.normal_(layer.weight, std=init_std)
                nn.init.zeros_(layer.bias)
        if self.has_bbox:
            self.bbox_pred = nn.Linear(hidden, 4 * num_classes)
            nn.init.normal_(self.bbox_pred.weight, std=0.001)
            nn.init.zeros_(self.bbox_pred.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """fc7 activations (post-ReLU); dropout follows ``self.training``."""
        h = self.drop(torch.relu(self.fc6(x)))
        return torch.relu(self.fc7(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.drop(self.features(x)))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(class logits (N, C + 1), box deltas (N, C, 4) or None) from one fc pass."""
        h = self.drop(self.features(x))
        deltas = self.bbox_pred(h).view(len(x), self.num_classes, 4) if self.has_bbox else None
        return self.cls(h), deltas

    def set_fc6_factors(self, u: torch.Tensor, v: torch.Tensor) -> None:
        """Record that fc6.weight == u @ v (as loaded from a low-rank model file)."""
        self._fc6_factors = (u, v, self.fc6.weight._version)

    def fc6_factors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(U, V) with fc6.weight == U @ V, if recorded and fc6.weight has not been changed
        in place since (training, folding), else None."""
        if self._fc6_factors is None or self._fc6_factors[2] != self.fc6.weight._version:
            return None
        return self._fc6_factors[0], self._fc6_factors[1]

    def config(self) -> dict[str, Any]:
        cfg = {"in_dim": self.in_dim, "hidden": self.hidden, "num_classes": self.num_classes,
               "dropout": self.dropout, "init_std": self.init_std}
        if self.has_bbox:
            cfg["bbox"] = True
        return cfg

    @torch.no_grad()
    def fold_input_standardisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Make fc6 take raw inputs x where it was trained on (x - mean) / std:
        W' = W / std (per input), b' = b - W' @ mean."""
        w = self.fc6.weight / std.to(self.fc6.weight)[None, :]
        self.fc6.bias -= w @ mean.to(w)
        self.fc6.weight.copy_(w)

    @torch.no_grad()
    def fc7_numpy(self, x: np.ndarray, batch: int = 4096) -> np.ndarray:
        """fc7 features (N, hidden) float32 of scaled pooled features (N, in_dim), eval mode."""
        was_training = self.training
        self.eval()
        dev = next(self.parameters()).device
        x = np.asarray(x, np.float32)
        out = np.empty((len(x), self.hidden), np.float32)
        for s in range(0, len(x), batch):
            out[s:s + batch] = self.features(torch.from_numpy(x[s:s + batch]).to(dev)).cpu().numpy()
        self.train(was_training)
        return out

"""A model's test-time heads as batched matrix products in torch, on one device, in float32
(or bfloat16 where asked and native: ``--precision``, the fast preset).

Pooled features (N, D_pool) come in; scores (N, C) and box deltas come out, without a loop
over windows and without leaving the device:

- head ``pool``: scores = x @ (s W_svm)^T + b_svm (s: the stored feature scale);
- head ``fc7``: h = relu(relu(x @ (s W6)^T + b6) @ W7^T + b7), scores = h @ (s7 W_svm)^T + b_svm
  (s7: the fc7 scale); fc6 stored at rank t (``pack --fc6-rank``) runs as x @ (s V)^T @ U^T;
- head ``softmax``: the same fc layers, class probabilities softmax(h @ W_cls^T + b)[:, 1:]
  and box deltas (h @ W_bbox^T + b) * BBOX_STDS;
- ridge box regression (heads ``pool``/``fc7``): deltas = (x @ (s W_c) + b_c) * std_c + mean_c.

The scales are folded into the weights once, so no (N, D) scaled copy of the features is
made. ``DetectorModel.score/regress/predict`` are numpy wrappers over this module, and the
detector uses it directly, regressing only the windows that have a class above the score
threshold (``deltas(..., rows)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from sppdet.heads.bbox_regression import MAX_LOG_SCALE

if TYPE_CHECKING:
    from sppdet.heads.model_dir import DetectorModel

# Normalisation of the softmax head's box deltas (Fast R-CNN's); heads.conv_finetune trains with it.
BBOX_STDS = (0.1, 0.1, 0.2, 0.2)


# oneDNN compiles a bfloat16 matrix product for every new row count (~30 ms each, measured):
# on the CPU, bfloat16 products run on blocks of this many rows (the last one padded), so each
# layer has one shape and the compiled kernel is reused from the first image on.
BF16_BLOCK_ROWS = 256


def _tensor(a: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(a).detach().to(device=device, dtype=torch.float32).contiguous()


class WindowScorer:
    """The heads of one ``DetectorModel`` as tensors on ``device`` (built once).

    ``dtype`` bfloat16 runs the fc layers, classifier, SVMs and box deltas in bfloat16
    (about 4x faster on CPUs with AMX; scores and deltas come out as float32, the softmax
    in float32); ridge box regression stays float32."""

    def __init__(self, model: "DetectorModel", device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        dev = torch.device(device)
        self.device = dev
        self.dtype = dtype
        self.head = model.head
        spec = model.head_spec
        self.num_classes = len(model.classes)
        s = float(model.feature_scale)
        # fc layers: a list of (W^T (in, out), bias or None, relu after) applied in order.
        self.layers: list[tuple[torch.Tensor, torch.Tensor | None, bool]] = []
        self.cls: tuple[torch.Tensor, torch.Tensor] | None = None
        self.bbox_fc: tuple[torch.Tensor, torch.Tensor] | None = None
        self.svm: tuple[torch.Tensor, torch.Tensor] | None = None
        self.ridge: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        fc = model.fc
        if spec.fc_layers:
            assert fc is not None
            factors = fc.fc6_factors()
            if factors is not None:
                u, v = factors
                self.layers.append((_tensor(v, dev).mul(s).t().contiguous(), None, False))
                self.layers.append((_tensor(u, dev).t().contiguous(), _tensor(fc.fc6.bias, dev), True))
            else:
                self.layers.append((_tensor(fc.fc6.weight, dev).mul(s).t().contiguous(),
                                    _tensor(fc.fc6.bias, dev), True))
            self.layers.append((_tensor(fc.fc7.weight, dev).t().contiguous(), _tensor(fc.fc7.bias, dev), True))
        if spec.classifier:
            assert fc is not None
            self.cls = (_tensor(fc.cls.weight, dev).t().contiguous(), _tensor(fc.cls.bias, dev))
            if fc.has_bbox and model.config.get("bbox_regression", False):
                stds = torch.tensor(BBOX_STDS, device=dev).repeat(self.num_classes)
                self.bbox_fc = ((_tensor(fc.bbox_pred.weight, dev) * stds[:, None]).t().contiguous(),
                                _tensor(fc.bbox_pred.bias, dev) * stds)
            self._cast_matrices()
            return
        assert model.svm_W is not None and model.svm_b is not None
        svm_scale = s if spec.svm_input == "pool" else float(model.config["fc7_scale"])
        self.svm = (_tensor(model.svm_W, dev).mul(svm_scale).t().contiguous(), _tensor(model.svm_b, dev))
        self._cast_matrices()
        if model.bbox is not None:
            C, D, _ = model.bbox.W.shape
            flat = _tensor(model.bbox.W, dev).permute(1, 0, 2).reshape(D, C * 4).mul(s).contiguous()
            self.ridge = (flat, _tensor(model.bbox.b, dev).reshape(-1), _tensor(model.bbox.std, dev).reshape(-1),
                          _tensor(model.bbox.mean, dev).reshape(-1))

    def _cast_matrices(self) -> None:
        """The fc layers, classifier, box deltas and SVMs in ``dtype`` (after folding the
        scales in float32)."""
        def cast(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(self.dtype)

        self.layers = [(cast(w), cast(b), relu) for w, b, relu in self.layers]  # type: ignore[misc]
        self.cls = None if self.cls is None else (cast(self.cls[0]), cast(self.cls[1]))  # type: ignore[assignment]
        self.bbox_fc = None if self.bbox_fc is None else (cast(self.bbox_fc[0]), cast(self.bbox_fc[1]))  # type: ignore[assignment]
        self.svm = None if self.svm is None else (cast(self.svm[0]), cast(self.svm[1]))  # type: ignore[assignment]

    def _linear(self, x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x @ weight_t (+ bias); bfloat16 on the CPU in fixed blocks of rows."""
        if self.dtype != torch.bfloat16 or self.device.type != "cpu":
            return torch.addmm(bias, x, weight_t) if bias is not None else x @ weight_t

        def product(rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
            if bias is not None:
                return torch.addmm(bias, rows, weight_t, out=out)
            return torch.mm(rows, weight_t, out=out)

        n, size = x.shape[0], BF16_BLOCK_ROWS
        out = x.new_empty((n, weight_t.shape[1]))
        whole = n - n % size
        for start in range(0, whole, size):
            product(x[start:start + size], out[start:start + size])
        if whole < n:  # the last rows, padded with zeros to a whole block
            tail = x.new_zeros((size, x.shape[1]))
            tail[:n - whole] = x[whole:]
            out[whole:] = product(tail)[:n - whole]
        return out

    @property
    def has_bbox_reg(self) -> bool:
        return self.ridge is not None or self.bbox_fc is not None

    @torch.inference_mode()
    def scores(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(scores (N, C), fc7 activations (N, H) or None) of raw pooled features (N, D)."""
        x = torch.as_tensor(pooled).detach().to(device=self.device, dtype=self.dtype).contiguous()
        for weight_t, bias, relu in self.layers:
            x = self._linear(x, weight_t, bias)
            if relu:
                x = x.relu_()
        hidden = x if self.layers else None
        if self.cls is not None:
            logits = self._linear(x, self.cls[0], self.cls[1]).float()
            return torch.softmax(logits, dim=1)[:, 1:], hidden
        assert self.svm is not None
        return self._linear(x, self.svm[0], self.svm[1]).float(), hidden

    @torch.inference_mode()
    def deltas(self, pooled: torch.Tensor, hidden: torch.Tensor | None,
               rows: torch.Tensor | None = None) -> torch.Tensor | None:
        """De-normalised box deltas (R, C, 4) of windows ``rows`` (all if None), or None
        when the model has no box regression."""
        if self.ridge is not None:
            x = _tensor(pooled, self.device)
            x = x if rows is None else x.index_select(0, rows)
            flat, b, std, mean = self.ridge
            d = torch.addmm(b, x, flat).mul_(std).add_(mean)
        elif self.bbox_fc is not None:
            assert hidden is not None
            h = hidden if rows is None else hidden.index_select(0, rows)
            d = self._linear(h, self.bbox_fc[0], self.bbox_fc[1]).float()
        else:
            return None
        return d.view(-1, self.num_classes, 4)


def apply_deltas(boxes: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Move boxes (K, 4) by deltas (K, 4) (dx, dy, dw, dh; ``bbox_regression.apply_deltas``
    in torch, in the boxes' dtype)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = boxes[:, 0] + 0.5 * w + deltas[:, 0] * w
    cy = boxes[:, 1] + 0.5 * h + deltas[:, 1] * h
    nw = w * torch.exp(deltas[:, 2].clamp(max=MAX_LOG_SCALE))
    nh = h * torch.exp(deltas[:, 3].clamp(max=MAX_LOG_SCALE))
    return torch.stack([cx - 0.5 * nw, cy - 0.5 * nh, cx + 0.5 * nw, cy + 0.5 * nh], dim=1)

"""RMS normalisation, in float32 whatever the activation dtype (as the reference models do)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """`x / rms(x) * weight`; with `offset=1.0` the weight is stored as `w - 1` (Gemma)."""

    def __init__(self, dim: int, eps: float = 1e-6, offset: float = 0.0) -> None:
        super().__init__()
        self.eps = eps
        self.offset = offset
        self.weight = nn.Parameter(torch.zeros(dim) if offset else torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.float() + self.offset if self.offset else self.weight.float()
        if x.dtype == torch.float32:  # one fused kernel on the common path
            return F.rms_norm(x, weight.shape, weight, self.eps)
        return F.rms_norm(x.float(), weight.shape, weight, self.eps).to(x.dtype)

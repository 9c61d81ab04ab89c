"""Weight-only int8 linear layers for decoding: `Int8Linear` and `quantize_linears(model)`.

A decode step reads every weight once for a handful of rows, so its speed is the bytes of
weights read: int8 weights with one scale per output row read half of bfloat16's.  On the
CPU that matmul is PyTorch's `_weight_int8pack_mm` (bfloat16 activations, int8 weights,
row scales), a matrix-vector kernel: measured here it is 2-3x faster than a bfloat16
matmul for up to 4 rows and slower from about 5 (SmolLM2's shapes, two cores).  So each
layer keeps its bfloat16 weight too and uses it for batches and prefill; both copies
together are smaller than the float32 weights they replace.  Tied output heads keep
sharing the embedding's weight; only the int8 copy is new.

Prompt tokens always go through the bfloat16 weights, however few a step computes: the
runner turns the int8 kernel off (`Int8Switch`) for any step that computes prompt tokens,
so a prompt whose prefix came from the cache (one token left to compute) gets the same
states as the same prompt computed whole, and a repeated greedy request the same reply.

Quantizing is symmetric per output row: scale = max|w| / 127.  Weights that came from a
4- or 5-bit GGUF lose little more (their levels are already coarse), but greedy outputs
can differ from float32's after some tokens, so the exactness tests run without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_INT8_ROWS = 4  # above this many rows the bfloat16 matmul is faster (see above)


@dataclass(slots=True)
class Int8Switch:
    """Shared by one model's int8 layers; the model runner sets it before each step."""

    is_on: bool = True  # off while a step computes prompt tokens


class Int8Linear(nn.Module):
    qweight: Tensor  # [N, K] int8
    scale: Tensor  # [N], in the dense weight's dtype

    def __init__(self, linear: nn.Linear, switch: Int8Switch) -> None:
        super().__init__()
        self.switch = switch
        self.weight = linear.weight  # [N, K] the dense copy (shared if the head is tied)
        self.bias = linear.bias
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        self.register_buffer("qweight", torch.round(w / scale[:, None]).to(torch.int8))
        self.register_buffer("scale", scale.to(linear.weight.dtype))
        self.in_features, self.out_features = w.shape[1], w.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)  # [T, K]
        if not self.switch.is_on or rows.shape[0] > MAX_INT8_ROWS or not self._int8_kernel(rows):
            return F.linear(x, self.weight, self.bias)
        out = torch.ops.aten._weight_int8pack_mm(rows, self.qweight, self.scale)  # [T, N]
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def _int8_kernel(self, rows: Tensor) -> bool:
        return rows.device.type == "cpu" and rows.dtype == self.scale.dtype == torch.bfloat16


def quantize_linears(model: nn.Module) -> Int8Switch:
    """Give every `nn.Linear` of `model` an int8 copy (`Int8Linear`); the switch they share."""
    switch = Int8Switch()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child, switch))
    return switch

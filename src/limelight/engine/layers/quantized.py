"""Weight-only quantized linear layers for decoding: `Int8Linear`, `Int4Linear` and
`quantize_linears(model, bits)`.

A decode step reads every weight once for a handful of rows, so its speed is the bytes of
weights read.  On the CPU PyTorch ships two weight-only kernels for bfloat16 activations:

- `_weight_int8pack_mm`: int8 weights, one scale per output row.
- `_weight_int4pack_mm_for_cpu`: int4 weights, a scale and a zero per group of 32 inputs
  (`w = (q - 8) * scale + zero`).  A Q4_0/Q4_1 GGUF's blocks are groups of 32 too, so its
  4-bit levels fit this layout with no further loss beyond bfloat16's rounding.

Measured here (SmolLM2's four block shapes, 30 layers' distinct weights so that they come
from memory, not the cache; two cores), milliseconds per step:

    rows      1      2      4      8      16     32
    int8     8.6    9.9   11.4   21.0   32.0   55.6
    int4     3.9    4.6    6.4   11.6   21.8   42.4
    bf16    16.5   16.2   19.1   19.4   23.4   34.5

So each layer keeps its bfloat16 weight too, for batches and prefill, and uses its
quantized copy for steps of up to `max_rows` rows; both copies together are smaller than
the float32 weights they replace.  With `bits=4` the output head stays int8 (it decides
every token; GGUFs keep it at 8 bits or more, SmolLM2's is Q8_0), and so does a layer the
int4 kernel cannot take (inputs not in whole groups, outputs not a multiple of 16).  Tied
output heads keep sharing the embedding's weight; only the quantized copy is new.

Prompt tokens always go through the bfloat16 weights, however few a step computes: the
runner turns the quantized kernels off (`QuantSwitch`) for any step that computes prompt
tokens, so a prompt whose prefix came from the cache (one token left to compute) gets the
same states as the same prompt computed whole, and a repeated greedy request the same reply.

int8 is symmetric per output row (scale = max|w| / 127); int4 is asymmetric per group
(min to max in 15 steps).  Greedy outputs can differ from float32's after some tokens, so
the exactness tests run without quantization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INT4_GROUP_SIZE = 32  # inputs per int4 scale/zero pair, as a Q4 GGUF block


@dataclass(slots=True)
class QuantSwitch:
    """Shared by one model's quantized layers; the model runner sets it before each step."""

    is_on: bool = True  # off while a step computes prompt tokens


class QuantizedLinear(nn.Module):
    """A linear layer with its dense weight and a quantized copy for steps of few rows."""

    max_rows: ClassVar[int]  # above this many rows the bfloat16 matmul is faster (see above)

    def __init__(self, linear: nn.Linear, switch: QuantSwitch) -> None:
        super().__init__()
        self.switch = switch
        self.weight = linear.weight  # [N, K] the dense copy (shared if the head is tied)
        self.bias = linear.bias
        self.out_features, self.in_features = linear.weight.shape
        # PyTorch's kernels are the CPU's, for bfloat16 (activations have the weights' dtype)
        self.has_kernel = linear.weight.device.type == "cpu" and (
            linear.weight.dtype == torch.bfloat16
        )

    def forward(self, x: Tensor) -> Tensor:
        # a decode step's path: few checks, no reshapes for the usual [T, K] input
        rows = x if x.dim() == 2 else x.reshape(-1, self.in_features)  # [T, K]
        if not (self.has_kernel and self.switch.is_on and rows.shape[0] <= self.max_rows):
            return F.linear(x, self.weight, self.bias)
        out = self.matmul(rows)  # [T, N]
        if self.bias is not None:
            out = out + self.bias
        return out if x.dim() == 2 else out.reshape(*x.shape[:-1], self.out_features)

    def matmul(self, rows: Tensor) -> Tensor:
        raise NotImplementedError


class Int8Linear(QuantizedLinear):
    max_rows = 4
    qweight: Tensor  # [N, K] int8
    scale: Tensor  # [N], in the dense weight's dtype

    def __init__(self, linear: nn.Linear, switch: QuantSwitch) -> None:
        super().__init__(linear, switch)
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        self.register_buffer("qweight", torch.round(w / scale[:, None]).to(torch.int8))
        self.register_buffer("scale", scale.to(linear.weight.dtype))

    def matmul(self, rows: Tensor) -> Tensor:
        return torch.ops.aten._weight_int8pack_mm(rows, self.qweight, self.scale)


class Int4Linear(QuantizedLinear):
    max_rows = 12
    qweight: Tensor  # [N, K / 2] uint8, packed by PyTorch for its CPU kernel
    scales_and_zeros: Tensor  # [K / 32, N, 2], in the dense weight's dtype

    def __init__(self, linear: nn.Linear, switch: QuantSwitch) -> None:
        super().__init__(linear, switch)
        n, k = linear.weight.shape
        groups = linear.weight.detach().float().view(n, k // INT4_GROUP_SIZE, INT4_GROUP_SIZE)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # [N, K / 32]
        scale = ((high - low) / 15).clamp(min=1e-12)
        levels = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, 15)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            levels.view(n, k).to(torch.int32), 1
        )
        zero = low + 8 * scale  # the kernel computes (q - 8) * scale + zero
        pairs = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
        self.register_buffer("qweight", packed)
        self.register_buffer("scales_and_zeros", pairs.to(linear.weight.dtype))

    @staticmethod
    def supports(linear: nn.Linear) -> bool:
        """PyTorch packs int4 for its CPU kernel only, outputs by 16, inputs by whole groups."""
        (n, k), device = linear.weight.shape, linear.weight.device
        return device.type == "cpu" and n % 16 == 0 and k % INT4_GROUP_SIZE == 0

    def matmul(self, rows: Tensor) -> Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            rows, self.qweight, INT4_GROUP_SIZE, self.scales_and_zeros
        )


HEAD_NAMES = ("lm_head",)  # kept at int8 when the rest is int4


def quantize_linears(model: nn.Module, bits: int = 8) -> QuantSwitch:
    """Give every `nn.Linear` of `model` a quantized copy; the switch the blocks' share.

    The output head has a switch of its own that stays on: its logits make no state that
    the prefix cache keeps, so a prompt's last token may use the quantized head too (for a
    prompt mostly served from the cache, the dense head was a large share of the step)."""
    if bits not in (4, 8):
        raise ValueError(f"weight-only quantization has 4 or 8 bits, not {bits}")
    switch, head_switch = QuantSwitch(), QuantSwitch()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            if name in HEAD_NAMES:
                setattr(parent, name, Int8Linear(child, head_switch))
            else:
                int4 = bits == 4 and Int4Linear.supports(child)
                setattr(parent, name, (Int4Linear if int4 else Int8Linear)(child, switch))
    return switch

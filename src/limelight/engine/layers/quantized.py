"""Weight-only quantized linear layers for decoding: `Int8Linear`, `Int4Linear` and
`quantize_linears(model, bits)`.

A decode step reads every weight once for a handful of rows, so its speed is the bytes of
weights read and how fast they turn into products.  Two kernels, chosen when a layer is
made:

- limelight's own (`engine/kernels/quant_matmul.cpp`, where it was built with AVX-512
  VNNI): every group of 32 inputs of a row has an fp16 scale and offset, w = d·q + m with q
  a 4-bit level or an int8 one shifted by 128, packed by `pack_levels` in blocks of 16 rows;
  the activation rows are quantized to int8 per group of 32 on the fly and the products
  summed in integers.
- PyTorch's (elsewhere): `_weight_int8pack_mm` (int8, one scale per output row) and
  `_weight_int4pack_mm_for_cpu` (int4, a scale and a zero per group of 32 inputs), both for
  bfloat16 activations, widening each weight to float.

A Q4_0/Q4_1 GGUF's blocks are groups of 32 too, so its 4-bit levels fit either int4 layout
with no further loss beyond the scales' rounding.

Measured here (SmolLM2's seven matrices for each of 30 layers, distinct weights so that
they come from memory, not the cache; two cores; the best of 5), milliseconds per step:

    rows                   1      2      4      8      16     32     64
    int4, limelight      4.0    5.3    5.1    5.5   11.0   18.1   39.9
    int4, PyTorch        4.9    7.3    7.8   12.5   23.8   50.4   97.4
    bf16 (dense)        21.5   21.1   21.0   26.4   31.4   47.6   54.0

and the output head (49,152 x 576, int8): 0.62 / 1.73 ms at one row, 0.72 / 2.84 at 4,
2.11 / 10.65 at 16.  limelight's int4 streams its weights at ~24 GB/s on two cores, 80%
of what a plain reduction reads there (`amax` of 256 MB: 29.7 GB/s).

On an Intel Xeon with AMX (AVX10.1), where the kernel takes AMX tiles for passes of 12 to
16 rows and oneDNN takes them for bfloat16, the same measurement:

    rows                   1      4      8     12     16     32     48     64
    int4, limelight      2.8    3.8    5.5    6.9    8.6   15.9   21.2   27.0
    int4, VNNI only      2.8    3.7    5.3    7.4    9.9   18.2   26.6   35.5
    bf16 (dense)        19.8   20.1   19.5   19.9   20.1   22.4   25.4   26.3

So each layer keeps a dense path too (`dense`), for prompts and large batches, and uses
its quantized copy for steps of up to `max_rows` rows: 64 with limelight's kernel, 12
(int4) and 4 (int8) with PyTorch's.  With AMX and limelight's kernel the dense path is
`layers/dense.py`'s `LevelTiles`: the quantized levels turned into bfloat16 tiles as they
are multiplied, as fast as bfloat16 weights there, and no bfloat16 copy is kept (SmolLM2
int4 resident after load 499 instead of 707 MB).  Elsewhere it is the bfloat16 layer;
both copies together are smaller than the float32 weights they replace.
With `bits=4` the output head stays int8 (it decides every token; GGUFs keep it at 8 bits
or more, SmolLM2's is Q8_0), and so does a layer the int4 layouts cannot take (inputs not
in whole groups; PyTorch's also wants outputs by 16).  Tied output heads keep
sharing the embedding's weight; only the quantized copy is new.

Prompt tokens always go through the dense path, however few a step computes: the
runner turns the quantized kernels off (`QuantSwitch`) for any step that computes prompt
tokens, so a prompt whose prefix came from the cache (one token left to compute) gets
nearly the states of the same prompt computed whole.  Tried without the switch: a new turn
after a cached 1,000-token character prefix (~30 new tokens through limelight's kernel)
came 58 instead of 113 ms after the request (`limelight bench engine`), but the int8
model's greedy replies then parted from the checkpoint's at a gap of 0.27 nats, past
`test_quantized_model.py`'s near-tie: int8 activations in every prompt token add up.

With limelight's kernel every layer's levels run from its group's minimum to its maximum
(in 15 steps for int4, 255 for int8: both hold a Q4_1 GGUF's levels exactly) and the
output head's int8 is symmetric (it holds a Q8_0 head's); PyTorch's int8 is symmetric per
output row, its int4 per group from minimum to maximum.  Greedy
outputs can differ from float32's after some tokens, so the exactness tests run without
quantization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from limelight.engine import kernels

INT4_GROUP_SIZE = kernels.QUANT_GROUP  # inputs per scale pair, as a Q4 GGUF block
KERNEL_MAX_ROWS = 64  # limelight's kernel beats the dense matmul up to here (see above)


def pack_levels(weight: Tensor, bits: int, symmetric: bool = False) -> Tensor:
    """`weight` [N, K] quantized per group of 32 inputs and laid out for `quant_matmul`:
    uint8 [N' / 16, K / 32, 64 * (1 + bits)], N' = N rounded up to 16 (with zero rows).

    A group's levels run from its minimum to its maximum in 2^bits - 1 steps, which holds
    a Q4_0/Q4_1 block's 16 levels exactly at either width (255 = 15 x 17 steps); with
    `symmetric` (8 bits only) they are q x max|w| / 127, which holds a Q8_0 block's.

    Each block of 16 rows and group of 32 inputs holds the rows' fp16 scales d, then their
    offsets m, then their levels q (w = d·q + m) in 8 quads of 4 inputs: for quad j, bytes
    4r..4r+3 of a 64-byte vector are row r's 4 levels; 4-bit levels put quad j in the low
    and quad j + 4 in the high nibbles of vector j, 8-bit ones fill 8 vectors."""
    rows, group = kernels.QUANT_ROWS, kernels.QUANT_GROUP
    n, k = weight.shape
    padded = -n % rows
    w = F.pad(weight.detach().float(), (0, 0, 0, padded)).view(n + padded, k // group, group)
    if symmetric:  # int8 around zero, shifted into 0..255
        d = (w.abs().amax(dim=-1) / 127).clamp(min=1e-8).half()
        m = (-128 * d.float()).half()
        q = torch.round(w / d.float()[..., None]).clamp(-127, 127) + 128
    else:  # min to max in 15 or 255 steps
        top = (1 << bits) - 1
        low, high = w.amin(dim=-1), w.amax(dim=-1)  # [N', G]
        d = ((high - low) / top).clamp(min=1e-8).half()
        m = low.half()
        q = torch.round((w - m.float()[..., None]) / d.float()[..., None]).clamp(0, top)
    blocks, groups = (n + padded) // rows, k // group
    # [blocks, 16 rows, G, 8 quads, 4] -> [blocks, G, 8 quads, 16 rows, 4]
    q = q.to(torch.uint8).view(blocks, rows, groups, 8, 4).permute(0, 2, 3, 1, 4)
    if bits == 4:
        q = q[:, :, :4] | (q[:, :, 4:] << 4)
    scales = torch.stack([d, m], dim=-1).view(blocks, rows, groups, 2).permute(0, 2, 3, 1)
    scale_bytes = scales.contiguous().view(torch.uint8).view(blocks, groups, 4 * rows)
    return torch.cat([scale_bytes, q.reshape(blocks, groups, -1)], dim=-1).contiguous()


@dataclass(slots=True)
class QuantSwitch:
    """Shared by one model's quantized layers; the model runner sets it before each step."""

    is_on: bool = True  # off while a step computes prompt tokens


class QuantizedLinear(nn.Module):
    """A linear layer with its dense weight and a quantized copy for steps of few rows."""

    bits: ClassVar[int]
    torch_max_rows: ClassVar[int]  # above this many rows PyTorch's kernel loses to bfloat16
    packed: Tensor  # `pack_levels`' layout, where limelight's kernel multiplies (`kernel`)

    def __init__(self, linear: nn.Linear, switch: QuantSwitch, symmetric: bool = False) -> None:
        super().__init__()
        self.switch = switch
        # the dense layer, for prompts and large batches: its weight [N, K] is shared if the
        # head is tied; `dense.dense_linears` replaces it with a `DenseLinear` in bfloat16
        self.dense: nn.Module = linear
        self.bias = linear.bias
        self.out_features, self.in_features = linear.weight.shape
        on_cpu, dtype = linear.weight.device.type == "cpu", linear.weight.dtype
        self.kernel = None
        if on_cpu and dtype in kernels.DTYPES and self.in_features % INT4_GROUP_SIZE == 0:
            self.kernel = kernels.quant_matmul()
        if self.kernel is not None:
            self.max_rows = KERNEL_MAX_ROWS
            self.register_buffer("packed", pack_levels(linear.weight, self.bits, symmetric))
        else:  # PyTorch's kernels are the CPU's, for bfloat16 (the activations' dtype)
            self.max_rows = self.torch_max_rows if on_cpu and dtype == torch.bfloat16 else 0
            if self.max_rows:
                self.pack_for_torch(linear.weight.detach().float())

    def forward(self, x: Tensor) -> Tensor:
        # a decode step's path: few checks, no reshapes for the usual [T, K] input
        rows = x if x.dim() == 2 else x.reshape(-1, self.in_features)  # [T, K]
        if not (self.switch.is_on and rows.shape[0] <= self.max_rows):
            return self.dense(x)
        out = self.matmul(rows.contiguous())  # [T, N]; both kernels want contiguous rows
        if self.bias is not None:
            out = out + self.bias
        return out if x.dim() == 2 else out.reshape(*x.shape[:-1], self.out_features)

    def matmul(self, rows: Tensor) -> Tensor:
        if self.kernel is None:
            return self.torch_matmul(rows)
        out = self.kernel(rows, self.packed, self.bits)
        return out if out.shape[1] == self.out_features else out[:, : self.out_features]

    def pack_for_torch(self, w: Tensor) -> None:
        raise NotImplementedError

    def torch_matmul(self, rows: Tensor) -> Tensor:
        raise NotImplementedError


class Int8Linear(QuantizedLinear):
    bits = 8
    torch_max_rows = 4
    qweight: Tensor  # PyTorch's layout: [N, K] int8
    scale: Tensor  # [N], bfloat16

    def pack_for_torch(self, w: Tensor) -> None:
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        self.register_buffer("qweight", torch.round(w / scale[:, None]).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))

    def torch_matmul(self, rows: Tensor) -> Tensor:
        return torch.ops.aten._weight_int8pack_mm(rows, self.qweight, self.scale)


class Int4Linear(QuantizedLinear):
    bits = 4
    torch_max_rows = 12
    qweight: Tensor  # PyTorch's layout: [N, K / 2] uint8, packed by PyTorch for its kernel
    scales_and_zeros: Tensor  # [K / 32, N, 2], bfloat16

    def pack_for_torch(self, w: Tensor) -> None:
        n, k = w.shape
        groups = w.view(n, k // INT4_GROUP_SIZE, INT4_GROUP_SIZE)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # [N, K / 32]
        scale = ((high - low) / 15).clamp(min=1e-12)
        levels = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, 15)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            levels.view(n, k).to(torch.int32), 1
        )
        zero = low + 8 * scale  # the kernel computes (q - 8) * scale + zero
        pairs = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
        self.register_buffer("qweight", packed)
        self.register_buffer("scales_and_zeros", pairs.to(torch.bfloat16))

    @staticmethod
    def supports(linear: nn.Linear) -> bool:
        """Inputs in whole groups; PyTorch's layout also wants outputs by 16."""
        (n, k), device = linear.weight.shape, linear.weight.device
        if device.type != "cpu" or k % INT4_GROUP_SIZE:
            return False
        return n % 16 == 0 or kernels.quant_matmul() is not None

    def torch_matmul(self, rows: Tensor) -> Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            rows, self.qweight, INT4_GROUP_SIZE, self.scales_and_zeros
        )


HEAD_NAMES = ("lm_head",)  # kept at int8 when the rest is int4


def quantize_linears(model: nn.Module, bits: int = 8) -> QuantSwitch:
    """Give every `nn.Linear` of `model` a quantized copy; the switch the blocks' share.

    The output head's copy is int8 and symmetric (GGUFs keep it at Q8_0 or better).  It has
    a switch of its own that stays on: its logits make no state that the prefix cache
    keeps, so a prompt's last token may use the quantized head too (for a prompt mostly
    served from the cache, the dense head was a large share of the step)."""
    if bits not in (4, 8):
        raise ValueError(f"weight-only quantization has 4 or 8 bits, not {bits}")
    switch, head_switch = QuantSwitch(), QuantSwitch()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            if name in HEAD_NAMES:
                setattr(parent, name, Int8Linear(child, head_switch, symmetric=True))
            else:
                int4 = bits == 4 and Int4Linear.supports(child)
                setattr(parent, name, (Int4Linear if int4 else Int8Linear)(child, switch))
    return switch

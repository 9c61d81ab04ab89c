"""Dense bfloat16 linears whose rows do not depend on each other: `DenseLinear`,
`LevelTiles` and `dense_linears(model)`; on CPUs with AMX through limelight's tile kernels.

Why not `F.linear`: with AMX, oneDNN (PyTorch's bfloat16 matmul on the CPU) blocks its
sums by the number of rows, so one row's output can differ in the last bit between a step
of 1, 33 or 256 rows (measured on SmolLM2's four matrix shapes: every shape had rows that
did, at 33 rows and beyond; with AMX disabled, oneDNN's AVX-512 path did not, past one
row).  The prefix cache makes exactly that happen: a prompt computed whole and the same
prompt whose prefix came from the cache compute its last tokens in steps of other sizes.
Those last bits grew through 30 layers into logits 0.4 apart, and two identical greedy
requests to the server answered differently.  `kernels/tile_matmul.cpp` adds every output
element in one fixed order of AMX tile products whatever the rows around it, so a token's
states are the same bits however the scheduler cut the prompt.

It is also faster than oneDNN at the row counts of prompt steps (SmolLM2's four matrix
shapes of one layer, two cores, ms): 1 row 0.16 / 0.35, 33 rows 0.35 / 0.49, 128 rows
0.55 / 0.82, 256 rows 1.04 / 1.27; at 1,000 rows it is slower (5.1 / 4.2), past the
engine's prompt chunks.

A quantized layer's dense path (its prompt tokens) takes the same tile products from its
quantized levels (`LevelTiles`, `tile_quant_matmul`), turned into bfloat16 as they go, so
that it keeps no bfloat16 copy.  Where the CPU lends no AMX tiles (or the kernels are not
built) oneDNN's matrix path is used, which gave the same bits at every row count but one
(`DenseLinear`).  The output head stays as it is: it is often tied to the embedding, and a
packed copy of SmolLM2's would add 56 MB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from limelight.engine import kernels
from limelight.engine.layers.quantized import QuantizedLinear

TILE_COLS = 16  # output columns a weight tile holds
TILE_DEPTH = 32  # inputs a tile product adds up
HEAD_NAMES = ("lm_head",)


def pack_tiles(weight: Tensor) -> Tensor:
    """`weight` [N, K] laid out for `tile_matmul`: [N' / 16, K / 32, 16, 32], N' = N rounded
    up to 16 (zero rows).  Tile (b, g) row p holds inputs 32g + 2p and 32g + 2p + 1 of each
    of columns 16b..16b + 15 side by side: the operand of an AMX bfloat16 tile product."""
    n, k = weight.shape
    w = F.pad(weight.detach(), (0, 0, 0, -n % TILE_COLS))
    blocks, groups = w.shape[0] // TILE_COLS, k // TILE_DEPTH
    # [blocks, 16 columns, G, 16 pairs, 2] -> [blocks, G, 16 pairs, 16 columns, 2]
    tiles = w.view(blocks, TILE_COLS, groups, TILE_DEPTH // 2, 2).permute(0, 2, 3, 1, 4)
    return tiles.reshape(blocks, groups, TILE_DEPTH // 2, 2 * TILE_COLS).contiguous()


class DenseLinear(nn.Module):
    """A bfloat16 CPU linear whose output rows do not depend on the step's other rows.

    With AMX (`tiles`): its weight packed in tiles (`pack_tiles`, the plain weight not
    kept), multiplied by `kernels.tile_matmul`.  Elsewhere `F.linear`, a lone row doubled:
    oneDNN's matrix path gave every row count from 2 to 300 the same bits, but its one-row
    path summed in another order (the down projection of a prompt's last token, computed
    alone after a cached prefix, differed from the same token among 33, with oneDNN held to
    AVX-512 here)."""

    def __init__(self, linear: nn.Linear, tiles: bool = True) -> None:
        super().__init__()
        if not DenseLinear.supports(linear):
            raise ValueError("DenseLinear takes bfloat16 linears on the CPU")
        self.out_features, self.in_features = linear.weight.shape
        self.bias = linear.bias
        self.matmul = kernels.tile_matmul() if tiles else None
        if linear.weight.shape[1] % TILE_DEPTH:
            self.matmul = None
        self.weight: Tensor | None = None
        if self.matmul is not None:
            self.register_buffer("packed", pack_tiles(linear.weight))
        else:
            self.weight = linear.weight

    @staticmethod
    def supports(linear: nn.Linear) -> bool:
        return linear.weight.device.type == "cpu" and linear.weight.dtype == torch.bfloat16

    @property
    def tiled(self) -> bool:
        return self.matmul is not None

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.matmul is not None:
            out = self.matmul(rows.contiguous(), self.packed, self.out_features)
            if self.bias is not None:
                out = out + self.bias
        else:
            assert self.weight is not None  # kept where there are no tiles
            lone = rows.shape[0] == 1  # doubled: oneDNN's matrix path, not its one-row one
            out = F.linear(torch.cat([rows, rows]) if lone else rows, self.weight, self.bias)
            out = out[:1] if lone else out
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        tiled = ", tiled" if self.tiled else ""
        return f"in_features={self.in_features}, out_features={self.out_features}{tiled}"


class LevelTiles(nn.Module):
    """The dense path of a quantized layer on a CPU with AMX: its quantized weights (the
    layout of `quantized.pack_levels`, shared with the layer) turned into bfloat16 tiles as
    they are multiplied (`kernels.tile_quant_matmul`), with DenseLinear's row-invariant
    products.  The bfloat16 weight is not kept: SmolLM2 int4's blocks hold 53 instead of
    265 MB, at the speed of the bfloat16 tiles (its seven matrices x 30 layers, ms, levels /
    bfloat16: 1 row 11.4 / 10.8, 32 rows 12.5 / 12.8, 128 rows 29.8 / 27.6; two cores).
    The weights are then the quantized ones, as in decode steps: a GGUF's Q4/Q8 levels are
    the checkpoint's own; a bfloat16 checkpoint's prompts lose what quantizing loses."""

    def __init__(self, packed: Tensor, bits: int, out_features: int, bias: Tensor | None):
        super().__init__()
        matmul = kernels.tile_quant_matmul()
        assert matmul is not None, "LevelTiles needs AMX tiles"
        self.matmul, self.bits, self.out_features, self.bias = matmul, bits, out_features, bias
        self.packed = packed  # the quantized layer's buffer, not registered twice
        self.in_features = packed.shape[1] * TILE_DEPTH

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).contiguous()
        out = self.matmul(rows, self.packed, self.bits, self.out_features)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}"


def dense_linears(model: nn.Module) -> int:
    """Replace every bfloat16 CPU `nn.Linear` of `model` with a `DenseLinear` (tiled where
    the CPU lends AMX tiles), the output head aside; in a quantized layer with limelight's
    kernel, on a CPU with AMX, with `LevelTiles` instead (its bfloat16 weight dropped); how
    many."""
    replaced = 0
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if name in HEAD_NAMES or parent_name.split(".")[-1] in HEAD_NAMES:
                continue
            if type(child) is nn.Linear and DenseLinear.supports(child):
                setattr(parent, name, _dense_path(parent, child))
                replaced += 1
    return replaced


def _dense_path(parent: nn.Module, linear: nn.Linear) -> nn.Module:
    """`linear`'s row-invariant form: from its quantized copy where `parent` (a quantized
    layer) has one in limelight's layout and the CPU has tiles, else DenseLinear."""
    usable = kernels.tile_quant_matmul() is not None and linear.in_features % TILE_DEPTH == 0
    if usable and isinstance(parent, QuantizedLinear) and parent.kernel is not None:
        return LevelTiles(parent.packed, parent.bits, linear.out_features, linear.bias)
    return DenseLinear(linear)

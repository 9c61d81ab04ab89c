"""Dense bfloat16 linears whose rows do not depend on each other: `TiledLinear` and
`tile_linears(model)`, on CPUs with AMX.

Why not `F.linear`: with AMX, oneDNN (PyTorch's bfloat16 matmul on the CPU) blocks its
sums by the number of rows, so one row's output can differ in the last bit between a step
of 1, 33 or 256 rows (measured on SmolLM2's four matrix shapes: every shape had rows that
did, at 33 rows and beyond; with AMX disabled, oneDNN's AVX-512 path did not).  The prefix
cache makes exactly that happen: a prompt computed whole and the same prompt whose prefix
came from the cache compute its last tokens in steps of other sizes.  Those last bits grew
through 30 layers into logits 0.4 apart, and two identical greedy requests to the server
answered differently.  `kernels/tile_matmul.cpp` adds every output element in one fixed
order of AMX tile products whatever the rows around it, so a token's states are the same
bits however the scheduler cut the prompt.

It is also faster than oneDNN at the row counts of prompt steps (SmolLM2's four matrix
shapes of one layer, two cores, ms): 1 row 0.16 / 0.35, 33 rows 0.35 / 0.49, 128 rows
0.55 / 0.82, 256 rows 1.04 / 1.27; at 1,000 rows it is slower (5.1 / 4.2), past the
engine's prompt chunks.

Where the CPU lends no AMX tiles (or the kernels are not built) the linears stay
`nn.Linear`; oneDNN's paths there gave the same bits at every row count.  The output head
stays too: it is often tied to the embedding, and a packed copy of SmolLM2's would add
56 MB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from limelight.engine import kernels

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


class TiledLinear(nn.Module):
    """`nn.Linear` with its weight packed in AMX tiles (`pack_tiles`), multiplied by
    `kernels.tile_matmul`; the plain weight is not kept."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        matmul = kernels.tile_matmul()
        if matmul is None or not TiledLinear.supports(linear):
            raise ValueError("TiledLinear takes bfloat16 CPU linears, inputs by 32, with AMX")
        self.matmul = matmul
        self.out_features, self.in_features = linear.weight.shape
        self.register_buffer("packed", pack_tiles(linear.weight))
        self.bias = linear.bias

    @staticmethod
    def supports(linear: nn.Linear) -> bool:
        weight = linear.weight
        return (
            weight.device.type == "cpu"
            and weight.dtype == torch.bfloat16
            and weight.shape[1] % TILE_DEPTH == 0
            and kernels.tile_matmul() is not None
        )

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)
        out = self.matmul(rows.contiguous(), self.packed, self.out_features)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def tile_linears(model: nn.Module) -> int:
    """Replace every `nn.Linear` of `model` that `TiledLinear` supports, the output head
    aside (also the dense copies inside quantized layers); how many."""
    replaced = 0
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if name in HEAD_NAMES or parent_name.split(".")[-1] in HEAD_NAMES:
                continue
            if type(child) is nn.Linear and TiledLinear.supports(child):
                setattr(parent, name, TiledLinear(child))
                replaced += 1
    return replaced

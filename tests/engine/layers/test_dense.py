"""`layers/dense.py` and its kernels `tile_matmul` and `tile_quant_matmul`: dense bfloat16
linears whose output rows do not depend on the other rows of the step: AMX tiles where the
CPU has them (from a quantized layer's levels where it has them), elsewhere oneDNN's matrix
path with a lone row doubled."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from limelight.engine import kernels
from limelight.engine.layers.dense import DenseLinear, LevelTiles, dense_linears, pack_tiles
from limelight.engine.layers.quantized import Int4Linear, QuantSwitch, pack_levels


def cpu_has_amx() -> bool:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    flags = next(line for line in lines if line.startswith("flags")).split()
    return {"amx_bf16", "amx_tile", "avx512_bf16"} <= set(flags)  # what amx.h builds on


HAS_AMX = cpu_has_amx()
amx_only = pytest.mark.skipif(not HAS_AMX, reason="the CPU has no AMX: tiles are not offered")


def test_the_kernel_is_offered_exactly_where_the_cpu_has_amx() -> None:
    assert (kernels.tile_matmul() is not None) == HAS_AMX
    assert DenseLinear(nn.Linear(64, 32, dtype=torch.bfloat16)).tiled == HAS_AMX
    assert not DenseLinear(nn.Linear(48, 32, dtype=torch.bfloat16)).tiled  # inputs by 32
    assert not DenseLinear.supports(nn.Linear(64, 32))  # float32


def test_pack_tiles_lays_each_tile_out_as_the_tile_product_reads_it() -> None:
    weight = torch.randn(40, 96, dtype=torch.bfloat16)
    packed = pack_tiles(weight)
    assert packed.shape == (3, 3, 16, 32)  # 40 columns padded to 48, 96 inputs
    for column, inp in [(0, 0), (5, 33), (17, 64), (39, 95)]:
        block, group, pair, half = column // 16, inp // 32, (inp % 32) // 2, inp % 2
        assert packed[block, group, pair, 2 * (column % 16) + half] == weight[column, inp]
    assert (packed[2, :, :, 16:] == 0).all()  # columns 40-47: zero padding


@amx_only
@pytest.mark.parametrize(("n", "k"), [(208, 96), (200, 576), (32, 1536)])
def test_each_row_gets_the_same_bits_at_every_row_count(n: int, k: int) -> None:
    """Whatever the rows beside it, how many there are (whole tiles of 16, a short last
    one, an odd last column block) and how many threads run: the same bits, close to the
    exact product."""
    op = kernels.tile_matmul()
    assert op is not None
    torch.manual_seed(n + k)
    weight = (torch.randn(n, k) * 0.05).bfloat16()
    packed = pack_tiles(weight)
    x = torch.randn(300, k).bfloat16()
    whole = op(x, packed, n)
    assert whole.dtype == torch.bfloat16 and whole.shape == (300, n)
    exact = x.double() @ weight.double().T
    assert ((whole.double() - exact).norm() / exact.norm()) < 4e-3  # bfloat16's rounding
    for rows in [1, 2, 15, 16, 17, 33, 100]:
        assert torch.equal(op(x[:rows], packed, n), whole[:rows])
        assert torch.equal(op(x[-rows:].contiguous(), packed, n), whole[-rows:])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert torch.equal(op(x[:37], packed, n), whole[:37])
    finally:
        torch.set_num_threads(threads)


@amx_only
@pytest.mark.parametrize(
    ("x", "n", "message"),
    [
        (torch.randn(2, 64), 32, "contiguous bfloat16"),
        (torch.randn(2, 96).bfloat16(), 32, "x has 96 inputs, the weights 64"),
        (torch.randn(2, 64).bfloat16(), 40, "40 outputs do not fit 2 blocks of 16"),
    ],
)
def test_the_kernel_refuses_what_it_cannot_multiply(x: torch.Tensor, n: int, message: str) -> None:
    op = kernels.tile_matmul()
    assert op is not None
    with pytest.raises(RuntimeError, match=message):
        op(x, pack_tiles(torch.randn(32, 64).bfloat16()), n)


def test_a_row_gets_the_same_bits_alone_or_among_others() -> None:
    """Through this CPU's path (tiles with AMX, oneDNN's matrix path elsewhere), with a
    bias.  (oneDNN with AMX is not row-invariant: that is why the tiles are there.)"""
    torch.manual_seed(1)
    layer = DenseLinear(nn.Linear(576, 1536, dtype=torch.bfloat16))
    assert layer.tiled == HAS_AMX
    x = torch.randn(40, 576).bfloat16()
    many = layer(x)
    assert many.shape == (40, 1536) and many.dtype == torch.bfloat16
    exact = x.double() @ layer_weight(layer).double().T + layer.bias.double()
    assert ((many.double() - exact).norm() / exact.norm()) < 4e-3
    for rows in [1, 2, 3, 17, 33]:
        assert torch.equal(layer(x[:rows]), many[:rows])
    assert torch.equal(layer(x[5].view(1, 1, 576))[0, 0], many[5])  # leading dimensions kept


def layer_weight(layer: DenseLinear) -> torch.Tensor:
    """The plain weight, from its tiles if it has no other."""
    if layer.weight is not None:
        return layer.weight
    blocks, groups = layer.packed.shape[:2]
    tiles = layer.packed.view(blocks, groups, 16, 16, 2).permute(0, 3, 1, 2, 4)
    return tiles.reshape(blocks * 16, groups * 32)[: layer.out_features]


def test_dense_linears_takes_the_blocks_and_the_quantized_layers_dense_copies() -> None:
    """The output head and float32 layers stay.  A quantized layer's dense path multiplies
    by its quantized weights where the CPU has tiles (`LevelTiles`: no bfloat16 copy kept),
    elsewhere by its bfloat16 weight (`DenseLinear`)."""
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "proj": nn.Linear(64, 48, bias=True, dtype=torch.bfloat16),
            "quantized": nn.Linear(64, 32, bias=False, dtype=torch.bfloat16),
            "lm_head": nn.Linear(64, 100, bias=False, dtype=torch.bfloat16),
            "f32": nn.Linear(64, 32),
        }
    )
    model["quantized"] = Int4Linear(model["quantized"], QuantSwitch(is_on=False))
    x = torch.randn(5, 64).bfloat16()
    before = {name: model[name](x) for name in ("proj", "lm_head")}
    dense_before = model["quantized"].dense(x)
    assert dense_linears(model) == 2
    assert type(model["lm_head"]) is nn.Linear and type(model["f32"]) is nn.Linear
    proj, dense = model["proj"], model["quantized"].dense
    assert isinstance(proj, DenseLinear) and proj.tiled == HAS_AMX
    if proj.tiled:  # the plain weight is gone
        assert not any(p.ndim == 2 for p in proj.parameters())
    assert isinstance(dense, LevelTiles if HAS_AMX else DenseLinear)
    if HAS_AMX:  # the quantized layer's levels, shared; its bfloat16 weight gone
        assert dense.packed is model["quantized"].packed
        assert not any(p.ndim == 2 for p in model["quantized"].parameters())
        dense_before = x.double() @ level_weight(model["quantized"].packed, 4, 32).T
    for got, want in [(proj(x), before["proj"]), (dense(x), dense_before)]:
        assert got.dtype == torch.bfloat16
        assert ((got.double() - want.double()).norm() / want.double().norm()) < 1e-2
    assert torch.equal(model["lm_head"](x), before["lm_head"])
    assert torch.equal(proj(torch.zeros(2, 64).bfloat16()), proj.bias.expand(2, 48))  # once


def level_weight(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """The weights of `pack_levels`' layout [N / 16, K / 32, 64 (1 + bits)], w = d·q + m,
    rounded as the tile kernel rounds them: [n, K] float64."""
    blocks, groups = packed.shape[:2]
    scales = packed[:, :, :64].contiguous().view(torch.float16).view(blocks, groups, 2, 16)
    d, m = (scales[:, :, i].double().permute(0, 2, 1)[..., None] for i in (0, 1))
    levels = packed[:, :, 64:]
    if bits == 4:  # quads 0-3 in the low nibbles, 4-7 in the high
        levels = levels.reshape(blocks, groups, 4, 16, 4)
        levels = torch.cat([levels & 15, levels >> 4], dim=2)
    q = levels.reshape(blocks, groups, 8, 16, 4).permute(0, 3, 1, 2, 4).double()
    # exact in float64, then rounded to float32 (one fused multiply-add) and to bfloat16
    w = (m + d * q.reshape(blocks, 16, groups, 32)).float().bfloat16()  # [blocks, 16, G, 32]
    return w.double().reshape(blocks * 16, groups * 32)[:n]


@amx_only
@pytest.mark.parametrize("bits", [4, 8])
def test_level_tiles_multiply_by_the_quantized_weights_as_the_dense_tiles_would(
    bits: int,
) -> None:
    """`tile_quant_matmul` gives the bits `tile_matmul` gives on the same weights in
    bfloat16, at every row count, and each row the same bits however many rows."""
    torch.manual_seed(bits)
    n, k = 200, 320
    packed = pack_levels(torch.randn(n, k) * 0.05, bits)
    weight = level_weight(packed, bits, n)
    tiles = kernels.tile_quant_matmul()
    assert tiles is not None
    x = torch.randn(300, k).bfloat16()
    many = tiles(x, packed, bits, n)
    assert torch.equal(many, kernels.tile_matmul()(x, pack_tiles(weight.bfloat16()), n))
    exact = x.double() @ weight.T
    assert ((many.double() - exact).norm() / exact.norm()) < 4e-3
    for first, last in [(0, 1), (5, 6), (3, 40), (17, 300), (299, 300)]:
        assert torch.equal(tiles(x[first:last].contiguous(), packed, bits, n), many[first:last])


@amx_only
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((torch.randn(2, 64).bfloat16(), 3, 32), "4 or 8 bits, not 3"),
        ((torch.randn(2, 64), 4, 32), r"x must be contiguous bfloat16 \[M, K\]"),
        ((torch.randn(2, 96).bfloat16(), 4, 32), "x has 96 inputs, the weights 64"),
        ((torch.randn(2, 64).bfloat16(), 8, 32), r"qweight must be contiguous uint8"),
        ((torch.randn(2, 64).bfloat16(), 4, 40), "40 outputs do not fit 2 blocks of 16"),
    ],
)
def test_tile_quant_matmul_refuses_what_it_cannot_multiply(
    args: tuple[torch.Tensor, int, int], message: str
) -> None:
    x, bits, n = args
    with pytest.raises(RuntimeError, match=message):
        kernels.tile_quant_matmul()(x, pack_levels(torch.randn(32, 64), 4), bits, n)

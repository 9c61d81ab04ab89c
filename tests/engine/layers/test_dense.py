"""`layers/dense.py` and its kernel `tile_matmul`: dense bfloat16 linears whose output rows
do not depend on the other rows of the step, on CPUs with AMX; elsewhere the linears stay
`nn.Linear` (whose oneDNN paths there keep rows apart by themselves)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from limelight.engine import kernels
from limelight.engine.layers.dense import TiledLinear, pack_tiles, tile_linears
from limelight.engine.layers.quantized import Int4Linear, QuantSwitch


def cpu_has_amx() -> bool:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    flags = next(line for line in lines if line.startswith("flags")).split()
    return "amx_bf16" in flags and "amx_tile" in flags


HAS_AMX = cpu_has_amx()
amx_only = pytest.mark.skipif(not HAS_AMX, reason="the CPU has no AMX: tiles are not offered")


def test_the_kernel_is_offered_exactly_where_the_cpu_has_amx() -> None:
    assert (kernels.tile_matmul() is not None) == HAS_AMX
    linear = nn.Linear(64, 32, dtype=torch.bfloat16)
    assert TiledLinear.supports(linear) == HAS_AMX


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


def test_tile_linears_takes_the_blocks_and_the_quantized_layers_dense_copies() -> None:
    """The output head and float32 layers stay; where the CPU has no AMX nothing changes."""
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
    replaced = tile_linears(model)
    assert type(model["lm_head"]) is nn.Linear and type(model["f32"]) is nn.Linear
    if not HAS_AMX:
        assert replaced == 0 and type(model["proj"]) is nn.Linear
        return
    assert replaced == 2
    proj, dense = model["proj"], model["quantized"].dense
    assert isinstance(proj, TiledLinear) and isinstance(dense, TiledLinear)
    assert not any(p.ndim == 2 for p in proj.parameters())  # the plain weight is gone
    for got, want in [(proj(x), before["proj"]), (dense(x), dense_before)]:
        assert got.dtype == torch.bfloat16
        assert ((got.float() - want.float()).norm() / want.float().norm()) < 1e-2
    assert torch.equal(model["lm_head"](x), before["lm_head"])
    assert proj(x.view(5, 1, 64)).shape == (5, 1, 48)  # leading dimensions kept
    assert torch.equal(proj(torch.zeros(2, 64).bfloat16()), proj.bias.expand(2, 48))  # once

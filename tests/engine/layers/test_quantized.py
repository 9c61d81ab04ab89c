"""Weight-only linears: a quantized copy for a few rows, the dense weight for more; tied
heads stay tied; int4 keeps the head at int8."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from limelight.engine.layers.quantized import (
    INT4_GROUP_SIZE,
    Int4Linear,
    Int8Linear,
    QuantizedLinear,
    QuantSwitch,
    quantize_linears,
)

KINDS = [Int8Linear, Int4Linear]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [False, True])
def test_few_rows_use_quantized_weights_close_to_the_dense_result(
    kind: type[QuantizedLinear], bias: bool
) -> None:
    torch.manual_seed(0)
    dense = nn.Linear(96, 48, bias=bias).to(torch.bfloat16)
    switch = QuantSwitch()
    layer = kind(dense, switch)
    many = torch.randn(kind.max_rows + 1, 96).to(torch.bfloat16)  # too many rows: dense
    assert torch.equal(layer(many), F.linear(many, dense.weight, dense.bias))
    for few in (many[:1], many[:3].view(1, 3, 96)):  # [T, K] and [1, T, K]
        got, want = layer(few).float(), F.linear(few, dense.weight, dense.bias).float()
        assert got.shape == want.shape
        assert not torch.equal(got, want)  # the quantized kernel ran: its rounding shows
        assert (got - want).norm() / want.norm() < (0.02 if kind is Int8Linear else 0.12)
    switch.is_on = False  # a step with prompt tokens: the dense weights, however few rows
    assert torch.equal(layer(many[:1]), F.linear(many[:1], dense.weight, dense.bias))


def test_int4_holds_four_bit_levels_exactly() -> None:
    """Weights already on a 4-bit grid per group of 32 (as a Q4_1 GGUF's are) come back
    as they were, up to bfloat16's rounding of the output."""
    torch.manual_seed(1)
    n, k = 32, 4 * INT4_GROUP_SIZE
    step = torch.rand(n, k // INT4_GROUP_SIZE, 1) * 0.02 + 0.005
    low = torch.randn(n, k // INT4_GROUP_SIZE, 1) * 0.05
    levels = torch.randint(0, 16, (n, k // INT4_GROUP_SIZE, INT4_GROUP_SIZE))
    levels[..., 0], levels[..., 1] = 0, 15  # each group spans the grid, as Q4_1's do
    weight = (low + step * levels).view(n, k).to(torch.bfloat16)
    dense = nn.Linear(k, n, bias=False).to(torch.bfloat16)
    dense.weight.data.copy_(weight)
    layer = Int4Linear(dense, QuantSwitch())
    x = torch.randn(2, k).to(torch.bfloat16)
    got, want = layer(x).float(), x.float() @ weight.float().T
    # measured 0.003 (bfloat16 rounding); off-grid random weights give 0.09
    assert (got - want).norm() / want.norm() < 0.01


def test_the_quantized_path_is_only_for_bfloat16_on_the_cpu() -> None:
    dense = nn.Linear(32, 16)
    for kind in KINDS:
        layer = kind(dense, QuantSwitch())  # float32 weights: always dense
        x = torch.randn(1, 32)
        assert torch.equal(layer(x), F.linear(x, dense.weight, dense.bias))


@pytest.mark.parametrize("bits", [8, 4])
def test_quantize_linears_keeps_tied_weights_shared(bits: int) -> None:
    embed = nn.Embedding(50, 32)
    model = nn.ModuleDict({"proj": nn.Linear(32, 32), "lm_head": nn.Linear(32, 50, bias=False)})
    model["lm_head"].weight = embed.weight
    switch = quantize_linears(model, bits=bits)
    proj, head = model["proj"], model["lm_head"]
    assert isinstance(proj, Int4Linear if bits == 4 else Int8Linear) and proj.switch is switch
    assert isinstance(head, Int8Linear) and head.weight is embed.weight  # int8 either way
    assert head.qweight.dtype == torch.int8 and head.qweight.shape == (50, 32)
    switch.is_on = False  # a step with prompt tokens: the head's logits keep no state
    assert head.switch is not switch and head.switch.is_on


def test_int4_needs_whole_groups_else_int8() -> None:
    model = nn.ModuleDict(
        {"part_group": nn.Linear(48, 16), "odd_out": nn.Linear(64, 40), "fits": nn.Linear(64, 16)}
    )
    quantize_linears(model, bits=4)
    assert isinstance(model["part_group"], Int8Linear) and isinstance(model["odd_out"], Int8Linear)
    assert isinstance(model["fits"], Int4Linear)
    with pytest.raises(ValueError, match="4 or 8 bits"):
        quantize_linears(nn.Linear(8, 8), bits=2)

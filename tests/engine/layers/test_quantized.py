"""Weight-only linears: a quantized copy for a few rows, the dense weight for more; tied
heads stay tied; int4 keeps the head at int8."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from limelight.engine import kernels
from limelight.engine.layers.quantized import (
    INT4_GROUP_SIZE,
    Int4Linear,
    Int8Linear,
    QuantizedLinear,
    QuantSwitch,
    quantize_linears,
)
from tests.engine.test_kernels import quantize_rows

KINDS = [Int8Linear, Int4Linear]


@pytest.fixture(params=["kernel", "pytorch"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The layers made with limelight's quantized kernel, then with PyTorch's."""
    if request.param == "kernel":
        assert kernels.quant_matmul() is not None, "the quantized kernel did not build"
    else:
        monkeypatch.setattr(kernels, "quant_matmul", lambda: None)
    return str(request.param)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [False, True])
def test_few_rows_use_quantized_weights_close_to_the_dense_result(
    kind: type[QuantizedLinear], bias: bool, path: str
) -> None:
    torch.manual_seed(0)
    dense = nn.Linear(96, 48, bias=bias).to(torch.bfloat16)
    switch = QuantSwitch()
    layer = kind(dense, switch)
    assert layer.max_rows == (64 if path == "kernel" else kind.torch_max_rows)
    many = torch.randn(layer.max_rows + 1, 96).to(torch.bfloat16)  # too many rows: dense
    assert torch.equal(layer(many), F.linear(many, dense.weight, dense.bias))
    for few in (many[:1], many[:3].view(1, 3, 96)):  # [T, K] and [1, T, K]
        got, want = layer(few).float(), F.linear(few, dense.weight, dense.bias).float()
        assert got.shape == want.shape
        assert not torch.equal(got, want)  # the quantized kernel ran: its rounding shows
        assert (got - want).norm() / want.norm() < (0.02 if kind is Int8Linear else 0.12)
    switch.is_on = False  # a step with prompt tokens: the dense weights, however few rows
    assert torch.equal(layer(many[:1]), F.linear(many[:1], dense.weight, dense.bias))


@pytest.mark.parametrize("kind", KINDS)
def test_four_bit_levels_are_held_exactly(kind: type[QuantizedLinear], path: str) -> None:
    """Weights already on a 4-bit grid per group of 32 (as a Q4_1 GGUF's are) come back
    as they were, up to the scales' and the output's rounding: int4 by construction, and
    with limelight's kernel int8 too (its 255 steps from minimum to maximum are 15 x 17).
    That kernel also rounds the activations to int8, which the reference does too."""
    torch.manual_seed(1)
    n, k = 32, 4 * INT4_GROUP_SIZE
    step = torch.rand(n, k // INT4_GROUP_SIZE, 1) * 0.02 + 0.005
    low = torch.randn(n, k // INT4_GROUP_SIZE, 1) * 0.05
    levels = torch.randint(0, 16, (n, k // INT4_GROUP_SIZE, INT4_GROUP_SIZE))
    levels[..., 0], levels[..., 1] = 0, 15  # each group spans the grid, as Q4_1's do
    weight = (low + step * levels).view(n, k).to(torch.bfloat16)
    dense = nn.Linear(k, n, bias=False).to(torch.bfloat16)
    dense.weight.data.copy_(weight)
    layer = kind(dense, QuantSwitch())
    x = torch.randn(2, k).to(torch.bfloat16)
    seen = quantize_rows(x).float() if path == "kernel" else x.float()
    got, want = layer(x).float(), seen @ weight.float().T
    # measured 0.002-0.003 (bfloat16 rounding), 0.005 with PyTorch's int8 (symmetric per
    # row, off the grid); off-grid random weights give 0.09 with int4
    assert (got - want).norm() / want.norm() < 0.01


def test_pytorchs_kernels_take_only_bfloat16() -> None:
    dense = nn.Linear(32, 16)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels, "quant_matmul", lambda: None)
        for kind in KINDS:
            layer = kind(dense, QuantSwitch())  # float32 weights: always dense
            x = torch.randn(1, 32)
            assert torch.equal(layer(x), F.linear(x, dense.weight, dense.bias))


def test_limelights_kernel_takes_float32_too() -> None:
    torch.manual_seed(2)
    dense = nn.Linear(64, 32)
    for kind in KINDS:
        layer = kind(dense, QuantSwitch())
        x = torch.randn(2, 64)
        got, want = layer(x), F.linear(x, dense.weight, dense.bias)
        assert not torch.equal(got, want)
        assert (got - want).norm() / want.norm() < (0.02 if kind is Int8Linear else 0.12)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantize_linears_keeps_tied_weights_shared(bits: int, path: str) -> None:
    embed = nn.Embedding(48, 32).to(torch.bfloat16)
    model = nn.ModuleDict({"proj": nn.Linear(32, 32), "lm_head": nn.Linear(32, 48, bias=False)})
    model.to(torch.bfloat16)
    model["lm_head"].weight = embed.weight
    switch = quantize_linears(model, bits=bits)
    proj, head = model["proj"], model["lm_head"]
    assert isinstance(proj, Int4Linear if bits == 4 else Int8Linear) and proj.switch is switch
    assert isinstance(head, Int8Linear) and head.dense.weight is embed.weight  # int8 either way
    if path == "kernel":  # 3 blocks of 16 rows, 1 group: scales (64 bytes), then 8-bit levels
        assert head.packed.dtype == torch.uint8 and head.packed.shape == (3, 1, 64 + 512)
    else:
        assert head.qweight.dtype == torch.int8 and head.qweight.shape == (48, 32)
    switch.is_on = False  # a step with prompt tokens: the head's logits keep no state
    assert head.switch is not switch and head.switch.is_on


def test_int4_needs_whole_groups_else_int8(path: str) -> None:
    """Inputs must come in groups of 32; PyTorch's int4 also wants outputs by 16, while
    limelight's pads them."""
    model = nn.ModuleDict(
        {"part_group": nn.Linear(48, 16), "odd_out": nn.Linear(64, 40), "fits": nn.Linear(64, 16)}
    ).to(torch.bfloat16)
    quantize_linears(model, bits=4)
    assert isinstance(model["part_group"], Int8Linear) and isinstance(model["fits"], Int4Linear)
    odd = model["odd_out"]
    assert isinstance(odd, Int4Linear if path == "kernel" else Int8Linear)
    x = torch.randn(3, 64).to(torch.bfloat16)
    assert odd(x).shape == (3, 40)
    with pytest.raises(ValueError, match="4 or 8 bits"):
        quantize_linears(nn.Linear(8, 8), bits=2)


def test_rows_that_are_a_strided_view_are_multiplied_too(path: str) -> None:
    """A model may hand a layer a view (every other column of a wider tensor)."""
    torch.manual_seed(3)
    dense = nn.Linear(64, 32).to(torch.bfloat16)
    layer = Int4Linear(dense, QuantSwitch())
    wide = torch.randn(2, 128).to(torch.bfloat16)
    view = wide[:, ::2]
    assert not view.is_contiguous()
    assert torch.equal(layer(view), layer(view.contiguous()))

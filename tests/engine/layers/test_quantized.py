"""Int8Linear: int8 weights for a few rows, the dense weight for more; tied heads stay tied."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from limelight.engine.layers.quantized import (
    MAX_INT8_ROWS,
    Int8Linear,
    Int8Switch,
    quantize_linears,
)


@pytest.mark.parametrize("bias", [False, True])
def test_few_rows_use_int8_weights_close_to_the_dense_result(bias: bool) -> None:
    torch.manual_seed(0)
    dense = nn.Linear(96, 40, bias=bias).to(torch.bfloat16)
    switch = Int8Switch()
    layer = Int8Linear(dense, switch)
    x = torch.randn(2, 3, 96).to(torch.bfloat16)  # 6 rows: dense; 1 row: int8
    assert torch.equal(layer(x), F.linear(x, dense.weight, dense.bias))
    one = x[:1, :1]  # [1, 1, 96]
    got, want = layer(one).float(), F.linear(one, dense.weight, dense.bias).float()
    assert got.shape == want.shape == (1, 1, 40)
    assert not torch.equal(got, want)  # the int8 kernel ran: its rounding shows
    assert (got - want).norm() / want.norm() < 0.02
    switch.is_on = False  # a step with prompt tokens: the dense weights, however few rows
    assert torch.equal(layer(one), F.linear(one, dense.weight, dense.bias))


def test_the_int8_path_is_only_for_bfloat16_on_the_cpu() -> None:
    dense = nn.Linear(32, 16)
    layer = Int8Linear(dense, Int8Switch())  # float32 weights: always dense
    x = torch.randn(1, 32)
    assert torch.equal(layer(x), F.linear(x, dense.weight, dense.bias))
    assert MAX_INT8_ROWS >= 1


def test_quantize_linears_keeps_tied_weights_shared() -> None:
    embed = nn.Embedding(50, 16)
    model = nn.ModuleDict({"proj": nn.Linear(16, 16), "lm_head": nn.Linear(16, 50, bias=False)})
    model["lm_head"].weight = embed.weight
    switch = quantize_linears(model)
    assert all(isinstance(m, Int8Linear) and m.switch is switch for m in model.values())
    head = model["lm_head"]
    assert isinstance(head, Int8Linear) and head.weight is embed.weight
    assert head.qweight.dtype == torch.int8 and head.qweight.shape == (50, 16)

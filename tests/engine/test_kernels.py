"""The CPU kernels (`engine/kernels`): they build here, the attention kernels give the
attention that PyTorch (or float64) computes from the same slots, the matmuls the products
of what they pack, and all of them refuse inputs that would read outside the cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from limelight.engine import kernels
from limelight.engine.layers.quantized import pack_levels
from tests.engine.layers.test_dense import HAS_AMX

Kernel = Callable[..., torch.Tensor]


@pytest.fixture(scope="module")
def kernel() -> Kernel:
    op = kernels.paged_decode()
    assert op is not None, "the CPU attention kernel did not build (the log says why)"
    return op


def long(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    rows: list[list[int]],
    scale: float,
    softcap: float = 0.0,
) -> torch.Tensor:
    """Each row's attention over its list of slots, in float64: [B, Hkv, G, D]."""
    out = []
    for b, slots in enumerate(rows):
        keys = k_cache[long(slots)].double().transpose(0, 1)  # [Hkv, L, D]
        values = v_cache[long(slots)].double().transpose(0, 1)
        scores = q[b].double() @ keys.transpose(-1, -2) * scale  # [Hkv, G, L]
        if softcap:
            scores = torch.tanh(scores / softcap) * softcap
        out.append(torch.softmax(scores, dim=-1) @ values)
    return torch.stack(out)


def block_slots(rng: torch.Generator, num_blocks: int, length: int, block: int = 16) -> list[int]:
    """`length` slots in random whole blocks, as the block manager hands them out."""
    blocks = torch.randperm(num_blocks, generator=rng)[: (length + block - 1) // block]
    return (blocks[:, None] * block + torch.arange(block)).flatten()[:length].tolist()


@pytest.mark.parametrize(
    ("q_dtype", "cache_dtype", "head_dim", "tolerance"),
    [
        (torch.float32, torch.float32, 64, 1e-5),
        (torch.float32, torch.bfloat16, 128, 1e-5),
        (torch.bfloat16, torch.bfloat16, 64, 1e-2),
        (torch.bfloat16, torch.float32, 40, 1e-2),  # a head size without its own loop
    ],
)
def test_each_row_attends_to_its_slots(
    kernel: Kernel,
    q_dtype: torch.dtype,
    cache_dtype: torch.dtype,
    head_dim: int,
    tolerance: float,
) -> None:
    rng = torch.Generator().manual_seed(0)
    kv, groups, num_blocks = 2, 3, 64
    k_cache = torch.randn(num_blocks * 16, kv, head_dim, generator=rng).to(cache_dtype)
    v_cache = torch.randn(num_blocks * 16, kv, head_dim, generator=rng).to(cache_dtype)
    lengths = [1, 17, 130, 300]  # one key, a partial tile, and more than one work item
    rows = [block_slots(rng, num_blocks, n) for n in lengths]
    slots = torch.zeros(len(rows), max(lengths), dtype=torch.long)
    for b, row in enumerate(rows):
        slots[b, : len(row)] = long(row)
    q = torch.randn(len(rows), kv, groups, head_dim, generator=rng).to(q_dtype)
    none = long([])
    scale = head_dim**-0.5
    out = kernel(q, k_cache, v_cache, slots, long([0] * 4), long(lengths), none, none, scale, 0.0)
    assert out.dtype == q_dtype and out.shape == q.shape
    expected = reference(q, k_cache, v_cache, rows, scale)
    torch.testing.assert_close(out.double(), expected, atol=tolerance, rtol=tolerance)


def test_a_window_and_capped_scores(kernel: Kernel) -> None:
    """Rows read `slots[b, begin:end]` (a sliding window) with tanh-capped scores."""
    rng = torch.Generator().manual_seed(1)
    k_cache, v_cache = (torch.randn(512, 1, 16, generator=rng) * 4 for _ in range(2))
    slots = torch.randperm(512, generator=rng)[:400].view(2, 200)
    q = torch.randn(2, 1, 2, 16, generator=rng) * 4
    begin, end = long([150, 0]), long([200, 90])
    out = kernel(q, k_cache, v_cache, slots, begin, end, long([]), long([]), 0.25, 5.0)
    rows = [slots[0, 150:200].tolist(), slots[1, :90].tolist()]
    expected = reference(q, k_cache, v_cache, rows, 0.25, softcap=5.0)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("num_rows", "head_dim"),
    [
        (3, 64),  # 2 sharing rows: 6 queries a KV head, the few-query loop
        (5, 64),  # 12 in the lanes (16 wide)
        (9, 40),  # 24 (32 wide), a head size without its own loop
        (13, 64),  # 36: two groups of lanes
    ],
)
def test_shared_keys_are_read_for_every_sharing_row(
    kernel: Kernel, num_rows: int, head_dim: int
) -> None:
    """Every row but row 1 shares 300 keys besides its own; row 1 has only its own."""
    rng = torch.Generator().manual_seed(2)
    k_cache, v_cache = (torch.randn(4096, 3, head_dim, generator=rng).bfloat16() for _ in range(2))
    shared = block_slots(rng, 256, 300)
    free = [s for s in range(4096) if s not in set(shared)]
    lengths = [5 + 37 * row % 140 for row in range(num_rows)]
    own = [free[200 * row : 200 * row + n] for row, n in enumerate(lengths)]
    assert [len(row) for row in own] == lengths
    slots = torch.zeros(num_rows, max(lengths), dtype=torch.long)
    for b, row in enumerate(own):
        slots[b, : len(row)] = long(row)
    q = torch.randn(num_rows, 3, 3, head_dim, generator=rng)
    sharing = [b for b in range(num_rows) if b != 1]
    begin = long([0] * num_rows)
    scale = head_dim**-0.5
    out = kernel(
        q, k_cache, v_cache, slots, begin, long(lengths), long(sharing), long(shared), scale, 0.0
    )
    rows = [shared + own[b] if b in sharing else own[b] for b in range(num_rows)]
    expected = reference(q, k_cache, v_cache, rows, scale)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_it_agrees_with_pytorch_attention_on_an_engine_batch(kernel: Kernel) -> None:
    """The same numbers as SDPA over the gathered keys, the path it replaces."""
    rng = torch.Generator().manual_seed(3)
    k_cache, v_cache = (torch.randn(2048, 3, 64, generator=rng) for _ in range(2))
    slots = torch.stack([long(block_slots(rng, 128, 700)) for _ in range(4)])
    q = torch.randn(4, 3, 3, 64, generator=rng)
    ends = long([700, 650, 1, 399])
    out = kernel(q, k_cache, v_cache, slots, long([0] * 4), ends, long([]), long([]), 0.125, 0.0)
    keys, values = (c[slots].transpose(1, 2) for c in (k_cache, v_cache))  # [B, Hkv, L, D]
    visible = (torch.arange(700) < ends[:, None])[:, None, None, :]
    expected = F.scaled_dot_product_attention(
        q.view(4, 9, 1, 64), keys, values, attn_mask=visible, scale=0.125, enable_gqa=True
    )
    torch.testing.assert_close(out.view(4, 9, 1, 64), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"own_end": long([9])}, "key range out of bounds"),
        ({"own_begin": long([0, 0])}, "own_begin and own_end \\[B\\]"),
        ({"own_slots": long([[0, 1, 2, 3, 4, 5, 6, 99]])}, "slot out of bounds"),
        ({"shared_rows": long([1]), "shared_slots": long([0])}, "shared row out of bounds"),
        ({"shared_rows": long([0]), "shared_slots": long([64])}, "shared slot out of bounds"),
        ({"q": torch.zeros(1, 2, 1, 8, dtype=torch.float16)}, "float32 and bfloat16 only"),
        ({"q": torch.zeros(1, 3, 1, 8)}, "heads or head size differ"),
    ],
)
def test_inputs_that_would_read_outside_the_cache_are_refused(
    kernel: Kernel, change: dict[str, torch.Tensor], message: str
) -> None:
    args = {
        "q": torch.zeros(1, 2, 1, 8),
        "k_cache": torch.zeros(64, 2, 8),
        "v_cache": torch.zeros(64, 2, 8),
        "own_slots": torch.arange(8)[None],
        "own_begin": long([0]),
        "own_end": long([8]),
        "shared_rows": long([]),
        "shared_slots": long([]),
        "k_new": torch.ones(1, 2, 8),
        "v_new": torch.ones(1, 2, 8),
        "new_slots": long([7]),
    } | change
    caches = args["k_cache"].clone(), args["v_cache"].clone()
    with pytest.raises(RuntimeError, match=message):
        kernel(**args, scale=1.0, softcap=0.0)
    # nothing was written (the checks come first)
    assert torch.equal(args["k_cache"], caches[0]) and torch.equal(args["v_cache"], caches[1])


def test_new_keys_and_values_are_stored_before_they_are_read(kernel: Kernel) -> None:
    rng = torch.Generator().manual_seed(5)
    q = torch.randn(2, 3, 3, 64, generator=rng).bfloat16()
    k_cache = torch.randn(128, 3, 64, generator=rng).bfloat16()
    v_cache = torch.randn(128, 3, 64, generator=rng).bfloat16()
    rows = [list(range(0, 20)), list(range(32, 77))]
    new_slots = long([rows[0][-1], rows[1][-1]])
    k_new = torch.randn(2, 3, 64, generator=rng).bfloat16()
    v_new = torch.randn(2, 3, 64, generator=rng).bfloat16()
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    expected_k[new_slots], expected_v[new_slots] = k_new, v_new
    expected = reference(q, expected_k, expected_v, rows, 0.125)
    slots = torch.zeros(2, 45, dtype=torch.long)
    slots[0, :20], slots[1] = long(rows[0]), long(rows[1])
    none = long([])
    out = kernel(
        q,
        k_cache,
        v_cache,
        slots,
        long([0, 0]),
        long([20, 45]),
        none,
        none,
        0.125,
        0.0,
        k_new,
        v_new,
        new_slots,
    )
    assert torch.equal(k_cache, expected_k) and torch.equal(v_cache, expected_v)
    torch.testing.assert_close(out.double(), expected, atol=1e-2, rtol=1e-2)


def test_the_environment_can_turn_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMELIGHT_CPU_KERNELS", "0")
    monkeypatch.setattr(kernels, "_library", [])
    assert kernels.paged_decode() is None
    assert kernels.quant_matmul() is None


# limelight_kernels::quant_matmul


@pytest.fixture(scope="module")
def quant_matmul() -> Kernel:
    op = kernels.quant_matmul()
    assert op is not None, "the quantized matmul kernel did not build with AVX-512 VNNI"
    return op


def quantize_rows(x: torch.Tensor) -> torch.Tensor:
    """x as the kernel sees it: int8 levels per group of 32 inputs, dequantized (float64)."""
    groups = x.double().view(x.shape[0], -1, kernels.QUANT_GROUP)
    scale = groups.abs().amax(dim=-1, keepdim=True) / 127
    return (torch.round(groups / scale).nan_to_num() * scale).view(x.shape)


def dequantized(op: Kernel, packed: torch.Tensor, bits: int) -> torch.Tensor:
    """The weights the kernel multiplies by, [N', K]: its products with unit rows (whose
    int8 form is exact: one level of 127 at scale 1/127)."""
    k = packed.shape[1] * kernels.QUANT_GROUP
    return op(torch.eye(k), packed, bits).double().T


@pytest.mark.parametrize(("bits", "symmetric"), [(4, False), (8, False), (8, True)])
@pytest.mark.parametrize(("n", "k"), [(16, 32), (40, 96), (576, 576), (192, 1536)])
def test_packed_weights_are_within_half_a_level_of_the_dense_ones(
    quant_matmul: Kernel, bits: int, symmetric: bool, n: int, k: int
) -> None:
    torch.manual_seed(n + k)
    weight = torch.randn(n, k) * 0.05
    packed = pack_levels(weight, bits, symmetric)
    assert packed.shape == ((n + 15) // 16, k // 32, 64 * (1 + bits))
    got = dequantized(quant_matmul, packed, bits)
    assert torch.equal(got[n:], torch.zeros_like(got[n:]))  # the padding rows
    groups = weight.double().view(n, k // 32, 32)
    if symmetric:
        step = groups.abs().amax(dim=-1) / 127
    else:
        step = (groups.amax(dim=-1) - groups.amin(dim=-1)) / (2**bits - 1)
    error = (got[:n] - weight.double()).view(n, k // 32, 32).abs().amax(dim=-1)
    # half a level, plus the fp16 rounding of the scale and offset
    assert (error <= step * 0.5 * 1.01 + 1e-4).all()


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows", [1, 3, 8, 13, 17, 64])
@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)], ids=["f32", "bf16"]
)
def test_quant_matmul_multiplies_int8_rows_by_the_packed_weights(
    quant_matmul: Kernel, bits: int, rows: int, dtype: torch.dtype, tolerance: float
) -> None:
    """Every row (one pass of 1-8 rows, or with AMX of 12-16, several passes, a short last
    one) is the product of its int8 form with the weights, for both bit widths and both
    activation dtypes."""
    torch.manual_seed(rows * bits)
    n, k = 200, 320
    packed = pack_levels(torch.randn(n, k), bits)
    weights = dequantized(quant_matmul, packed, bits)[:n]
    x = torch.randn(rows, k).to(dtype)
    x[0, :32] = 0  # a group of zeros: scale 0, no division by it
    got = quant_matmul(x, packed, bits)
    assert got.dtype == dtype and got.shape == (rows, 208)
    want = quantize_rows(x) @ weights.T
    assert ((got[:, :n].double() - want).abs().amax() / want.abs().amax()) < tolerance


@pytest.mark.parametrize(
    ("x", "bits", "message"),
    [
        (torch.randn(2, 64), 3, "4 or 8 bits"),
        (torch.randn(64), 4, r"contiguous \[M, K\]"),
        (torch.randn(2, 64).half(), 4, "float32 or bfloat16"),
        (torch.randn(2, 96), 4, "x has 96 inputs, the weights 64"),
        (torch.randn(2, 64), 8, r"qweight must be contiguous uint8 \[N / 16, K / 32, 576\]"),
    ],
)
def test_quant_matmul_refuses_what_it_cannot_multiply(
    quant_matmul: Kernel, x: torch.Tensor, bits: int, message: str
) -> None:
    packed = pack_levels(torch.randn(32, 64), 4)
    with pytest.raises(RuntimeError, match=message):
        quant_matmul(x, packed, bits)


def test_quant_matmul_of_no_rows(quant_matmul: Kernel) -> None:
    packed = pack_levels(torch.randn(32, 64), 8)
    assert quant_matmul(torch.empty(0, 64), packed, 8).shape == (0, 32)


def test_quant_matmul_takes_amx_where_the_cpu_has_it(quant_matmul: Kernel) -> None:
    """Built for this CPU (-march=native), the kernel multiplies passes of 12-16 rows with
    AMX tiles where the CPU has them and Linux lends them to the process."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    flags = next(line for line in lines if line.startswith("flags")).split()
    assert kernels.quant_matmul_uses_amx() == ("amx_int8" in flags)


# limelight_kernels::tile_attention


HAS_TILES = HAS_AMX  # the CPU lends AMX tiles: the tile kernels are offered
tiles_only = pytest.mark.skipif(
    not HAS_TILES, reason="the CPU has no AMX: the kernel is not offered"
)


def test_tile_attention_is_offered_exactly_where_the_cpu_has_amx() -> None:
    assert (kernels.tile_attention() is not None) == HAS_TILES
    assert kernels.tile_attention_fits(64) and kernels.tile_attention_fits(256)
    assert not kernels.tile_attention_fits(8) and not kernels.tile_attention_fits(288)


@pytest.fixture(scope="module")
def tile_attention() -> Kernel:
    op = kernels.tile_attention()
    assert op is not None
    return op


def prompt_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slots: list[int],
    start: int,
    window: int = 0,
    softcap: float = 0.0,
) -> torch.Tensor:
    """Queries at positions start.. against the keys at `slots` (key j at position j),
    causal, in float64: [L, H * D]."""
    length, heads, d = q.shape
    groups = heads // k_cache.shape[1]
    keys = k_cache[long(slots)].double().repeat_interleave(groups, 1)  # [end, H, D]
    values = v_cache[long(slots)].double().repeat_interleave(groups, 1)
    scores = torch.einsum("lhd,khd->hlk", q.double(), keys) * d**-0.5
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    query = torch.arange(start, start + length)[:, None]
    key = torch.arange(len(slots))[None]
    seen = (key <= query) & ((query - key < window) if window else True)
    probabilities = scores.masked_fill(~seen, -torch.inf).softmax(-1)
    return torch.einsum("hlk,khd->lhd", probabilities, values).reshape(length, heads * d)


@tiles_only
@pytest.mark.parametrize(
    ("start", "length", "heads", "kv_heads", "head_dim", "window", "softcap"),
    [
        (0, 1, 9, 3, 64, 0, 0.0),  # one token alone
        (0, 37, 9, 3, 64, 0, 0.0),  # a fresh prompt, rows not whole tiles
        (992, 30, 9, 3, 64, 0, 0.0),  # a new turn after a cached character prefix
        (700, 300, 4, 4, 128, 0, 0.0),  # no grouped queries, larger heads
        (100, 50, 8, 2, 64, 64, 0.0),  # a sliding window
        (10, 40, 8, 2, 256, 0, 30.0),  # capped scores, the largest heads
    ],
)
@pytest.mark.parametrize("in_place", [True, False], ids=["cache-blocks", "scattered-slots"])
def test_tile_attention_is_causal_attention_over_its_slots(
    tile_attention: Kernel,
    start: int,
    length: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    window: int,
    softcap: float,
    in_place: bool,
) -> None:
    """Keys read in place from whole 16-slot blocks, or gathered from scattered slots."""
    rng = torch.Generator().manual_seed(start + length)
    k_cache = torch.randn(2048, kv_heads, head_dim, generator=rng).bfloat16()
    v_cache = torch.randn(2048, kv_heads, head_dim, generator=rng).bfloat16()
    end = start + length
    slots = (
        block_slots(rng, 128, end)
        if in_place
        else torch.randperm(2048, generator=rng)[:end].tolist()
    )
    q = torch.randn(length, heads, head_dim, generator=rng).bfloat16()
    got = tile_attention(q, k_cache, v_cache, long(slots), start, head_dim**-0.5, softcap, window)
    assert got.dtype == torch.bfloat16 and got.shape == (length, heads * head_dim)
    want = prompt_reference(q, k_cache, v_cache, slots, start, window, softcap)
    torch.testing.assert_close(got.double(), want, atol=1e-2, rtol=2e-2)


@tiles_only
@pytest.mark.parametrize("window", [0, 100])
def test_a_prompt_token_gets_the_same_bits_however_its_prompt_was_cut(
    tile_attention: Kernel, window: int
) -> None:
    """Each query is a tile row whose keys go by position, not by the call: a 700-token
    prompt in one call, or in two cut anywhere, gives every token the same bits."""
    rng = torch.Generator().manual_seed(7)
    k_cache = torch.randn(1024, 3, 64, generator=rng).bfloat16()
    v_cache = torch.randn(1024, 3, 64, generator=rng).bfloat16()
    slots = long(block_slots(rng, 64, 700))
    q = torch.randn(700, 9, 64, generator=rng).bfloat16()
    whole = tile_attention(q, k_cache, v_cache, slots, 0, 0.125, 0.0, window)
    for cut in (1, 2, 16, 35, 511, 512, 513, 699):
        head = tile_attention(q[:cut], k_cache, v_cache, slots[:cut], 0, 0.125, 0.0, window)
        tail = tile_attention(q[cut:], k_cache, v_cache, slots, cut, 0.125, 0.0, window)
        assert torch.equal(torch.cat([head, tail]), whole), f"cut at {cut}"


@tiles_only
def test_tile_attention_stores_the_new_keys_before_it_reads_them(tile_attention: Kernel) -> None:
    rng = torch.Generator().manual_seed(3)
    k_cache = torch.randn(256, 3, 64, generator=rng).bfloat16()
    v_cache = torch.randn(256, 3, 64, generator=rng).bfloat16()
    slots = long(list(range(64, 64 + 40)))
    q = torch.randn(8, 9, 64, generator=rng).bfloat16()
    k_new = torch.randn(8, 3, 64, generator=rng).bfloat16()
    v_new = torch.randn(8, 3, 64, generator=rng).bfloat16()
    new_slots = slots[32:]
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    expected_k[new_slots], expected_v[new_slots] = k_new, v_new
    got = tile_attention(
        q, k_cache, v_cache, slots, 32, 0.125, 0.0, 0, k_new, v_new, new_slots.contiguous()
    )
    assert torch.equal(k_cache, expected_k) and torch.equal(v_cache, expected_v)
    want = prompt_reference(q, expected_k, expected_v, slots.tolist(), 32)
    torch.testing.assert_close(got.double(), want, atol=1e-2, rtol=2e-2)


@tiles_only
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"q": torch.zeros(4, 6, 64)}, r"q must be contiguous bfloat16 \[L, H, D\]"),
        ({"k_cache": torch.zeros(64, 2, 64)}, "caches must be contiguous bfloat16"),
        ({"q": torch.zeros(4, 6, 8, dtype=torch.bfloat16)}, "head size 8"),
        ({"q": torch.zeros(4, 5, 64, dtype=torch.bfloat16)}, "5 heads over 2 KV heads"),
        ({"slots": torch.arange(7)}, "7 slots for 4 queries from position 4"),
        ({"slots": long([0, 1, 2, 3, 4, 5, 6, 64])}, "slot out of bounds"),
        ({"new_slots": long([99])}, "new slot out of bounds"),
        ({"window": -1}, "negative window"),
    ],
)
def test_tile_attention_refuses_what_would_read_outside_the_cache(
    tile_attention: Kernel, change: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {
        "q": torch.zeros(4, 6, 64, dtype=torch.bfloat16),
        "k_cache": torch.zeros(64, 2, 64, dtype=torch.bfloat16),
        "v_cache": torch.zeros(64, 2, 64, dtype=torch.bfloat16),
        "slots": torch.arange(8),
        "start": 4,
        "scale": 0.125,
        "softcap": 0.0,
        "window": 0,
        "k_new": torch.ones(1, 2, 64, dtype=torch.bfloat16),
        "v_new": torch.ones(1, 2, 64, dtype=torch.bfloat16),
        "new_slots": long([7]),
    } | change
    caches = args["k_cache"].clone(), args["v_cache"].clone()
    with pytest.raises(RuntimeError, match=message):
        tile_attention(**args)
    assert torch.equal(args["k_cache"], caches[0]) and torch.equal(args["v_cache"], caches[1])


@pytest.mark.parametrize(
    ("num_rows", "head_dim", "softcap", "in_blocks"),
    [
        (1, 64, 0.0, True),  # one row: its three query heads a KV head
        (3, 64, 0.0, False),  # scattered slots: gathered copies of the keys
        (5, 128, 0.0, True),  # 12 sharing queries a KV head: one tile of rows
        (7, 64, 30.0, True),  # 18: two tiles of rows, and capped scores
    ],
)
def test_bfloat16_rows_agree_with_float64(
    kernel: Kernel, num_rows: int, head_dim: int, softcap: float, in_blocks: bool
) -> None:
    """bfloat16 queries and cache: the path of a real decode step, on AMX CPUs the tile loop
    (attend_tiles.h).  Lengths cut blocks of 32 keys and chunks anywhere; all but row 1
    share 300 keys."""
    rng = torch.Generator().manual_seed(num_rows)
    k_cache, v_cache = (torch.randn(4096, 3, head_dim, generator=rng).bfloat16() for _ in range(2))
    shared = block_slots(rng, 256, 300) if in_blocks else torch.randperm(4096)[:300].tolist()
    free = [s for s in range(4096) if s not in set(shared)]
    if not in_blocks:
        free = [free[i] for i in torch.randperm(len(free), generator=rng).tolist()]
    lengths = [1 + 47 * row % 161 for row in range(num_rows)]  # 1, 48, 95, 142, 28, ...
    own = [free[200 * row : 200 * row + n] for row, n in enumerate(lengths)]
    slots = torch.zeros(num_rows, max(lengths), dtype=torch.long)
    for b, row in enumerate(own):
        slots[b, : len(row)] = long(row)
    q = torch.randn(num_rows, 3, 3, head_dim, generator=rng).bfloat16()
    sharing = [b for b in range(num_rows) if b != 1] if num_rows > 1 else []
    scale = head_dim**-0.5
    out = kernel(
        q, k_cache, v_cache, slots, long([0] * num_rows), long(lengths), long(sharing),
        long(shared if sharing else []), scale, softcap,
    )  # fmt: skip
    rows = [shared + own[b] if b in sharing else own[b] for b in range(num_rows)]
    expected = reference(q, k_cache, v_cache, rows, scale, softcap)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), expected, atol=1e-2, rtol=2e-2)

"""Paged attention's shared-prefix path: the prefix is the sequences' common whole blocks,
and reading it once gives the same attention, and the same greedy text, as reading every
sequence's keys, through the CPU decode kernel and through PyTorch alike."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
import torch

from limelight.engine import kernels
from limelight.engine.layers import batch as batch_module
from limelight.engine.layers.attention import PagedAttention
from limelight.engine.layers.batch import ForwardBatch, SequenceSlice
from limelight.engine.llm_engine import LLMEngine
from limelight.engine.types import SamplingParams
from tests.engine.fakes import VOCAB, tiny_engine

BS = 16


def positions_to_slots(table: list[int], positions: range) -> list[int]:
    return [table[p // BS] * BS + p % BS for p in positions]


def test_the_shared_prefix_is_the_common_whole_blocks_before_every_new_token() -> None:
    common = list(range(10, 30))  # 20 blocks, 320 tokens
    seqs = [
        SequenceSlice(start=330, num_new=1, block_table=[*common, 40]),
        SequenceSlice(start=335, num_new=1, block_table=[*common, 41]),
        SequenceSlice(start=100, num_new=1, block_table=[50, 51, 52, 53, 54, 55, 56]),
        SequenceSlice(start=325, num_new=1, block_table=[*common[:19], 60, 61]),  # branched
    ]
    shared = ForwardBatch.build(seqs, BS).shared
    assert shared is not None
    assert shared.rows.tolist() == [0, 1, 3]
    assert shared.slots.tolist() == positions_to_slots(common, range(19 * BS))
    prefix = 19 * BS
    expected = [range(prefix, 331), range(prefix, 336), range(0, 101), range(prefix, 326)]
    for row, (seq, own) in enumerate(zip(seqs, expected, strict=True)):
        n = len(own)
        assert shared.own_slots[row, :n].tolist() == positions_to_slots(seq.block_table, own)
        mask = shared.own_mask[row, 0, 0]
        assert (mask[:n] == 0).all() and (mask[n:] == float("-inf")).all()


def test_no_shared_prefix_when_it_would_not_pay() -> None:
    table = list(range(20))
    short = [
        SequenceSlice(start=200, num_new=1, block_table=[*table[:13], 30 + i]) for i in range(2)
    ]
    assert ForwardBatch.build(short, BS).shared is None  # 192 tokens < MIN_SHARED_TOKENS
    alone = [SequenceSlice(start=300, num_new=1, block_table=table)]
    assert ForwardBatch.build(alone, BS).shared is None
    prefill = [SequenceSlice(start=300, num_new=4, block_table=table) for _ in range(2)]
    assert ForwardBatch.build(prefill, BS).shared is None
    decode = [SequenceSlice(start=300, num_new=1, block_table=table) for _ in range(2)]
    assert ForwardBatch.build(decode, BS).shared is not None
    assert ForwardBatch.build(decode, BS, device="meta").shared is None  # the CPU's path only


@pytest.fixture(params=["kernel", "pytorch"])
def decode_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Decode attention through the CPU kernel, or through PyTorch as where it is not built."""
    if request.param == "pytorch":
        monkeypatch.setattr(kernels, "paged_decode", lambda: None)
    else:
        assert kernels.paged_decode() is not None
    return str(request.param)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_reading_shared_keys_once_gives_the_same_attention(
    dtype: torch.dtype, tolerance: float, decode_path: str
) -> None:
    torch.manual_seed(0)
    attention = PagedAttention(num_heads=6, num_kv_heads=2, head_dim=8, scale=8**-0.5)
    attention.bind_cache(
        torch.randn(64 * BS, 2, 8, dtype=dtype), torch.randn(64 * BS, 2, 8, dtype=dtype)
    )
    common = list(range(1, 21))
    seqs = [
        SequenceSlice(start=330 + 7 * i, num_new=1, block_table=[*common, 30 + 2 * i, 31 + 2 * i])
        for i in range(3)
    ] + [SequenceSlice(start=90, num_new=1, block_table=[50, 51, 52, 53, 54, 55])]
    batch = ForwardBatch.build(seqs, BS)
    assert batch.shared is not None
    q, k, v = (torch.randn(4, n, 8, dtype=dtype) for n in (6, 2, 2))
    once = attention(q, k, v, batch)
    batch.shared = None
    per_sequence = attention(q, k, v, batch)
    assert once.dtype == dtype and once.shape == per_sequence.shape == (4, 48)
    torch.testing.assert_close(once, per_sequence, atol=tolerance, rtol=tolerance)


def test_greedy_text_is_the_same_with_shared_keys_read_once(
    monkeypatch: pytest.MonkeyPatch, decode_path: str
) -> None:
    rng = random.Random(3)
    character = [rng.randrange(4, VOCAB) for _ in range(400)]
    prompts = [[*character, *(rng.randrange(4, VOCAB) for _ in range(5 + i))] for i in range(4)]
    prompts.append([rng.randrange(4, VOCAB) for _ in range(50)])  # another character
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    calls = []  # decode steps whose attention read shared keys once
    if decode_path == "kernel":
        through_kernel = PagedAttention._kernel_attend

        def counted_kernel(self: PagedAttention, *args: Any) -> torch.Tensor:
            keys = args[4]
            if len(keys.shared_rows):
                calls.append(1)
            return through_kernel(self, *args)

        monkeypatch.setattr(PagedAttention, "_kernel_attend", counted_kernel)
    else:
        cascade = PagedAttention._cascade

        def counted(self: PagedAttention, *args: Any) -> torch.Tensor:
            calls.append(1)
            return cascade(self, *args)

        monkeypatch.setattr(PagedAttention, "_cascade", counted)

    def generate(engine: LLMEngine, batch: list[list[int]]) -> list[list[int]]:
        ids = [engine.add_request(prompt, params) for prompt in batch]
        while engine.has_unfinished:
            engine.step()
        return [engine.pop_output(i).token_ids for i in ids]

    def run() -> list[list[int]]:
        engine = tiny_engine()
        generate(engine, [character])  # the character's blocks, as other users left them
        return generate(engine, prompts)

    once = run()
    assert calls  # the shared path ran
    monkeypatch.setattr(batch_module, "MIN_SHARED_TOKENS", 1 << 30)
    calls.clear()
    assert run() == once
    assert not calls


def test_a_chunk_beside_decoding_rows_is_split_in_two() -> None:
    seqs = [
        SequenceSlice(start=20, num_new=1, block_table=[5, 6]),  # decoding
        SequenceSlice(start=40, num_new=4, block_table=[1, 2, 3, 4]),  # a new turn
        SequenceSlice(start=9, num_new=1, block_table=[7]),  # decoding
    ]
    split = ForwardBatch.build(seqs, BS).chunk_split()
    assert split is not None
    assert split.tokens == slice(1, 5) and split.decode_tokens.tolist() == [0, 5]
    assert split.slots.tolist() == positions_to_slots([1, 2, 3, 4], range(44))
    assert split.query_positions.tolist() == [40, 41, 42, 43]
    mask = split.mask()[0, 0]
    assert mask.shape == (4, 44) and mask.sum(dim=1).tolist() == [41, 42, 43, 44]
    assert split.mask(sliding_window=8)[0, 0].sum(dim=1).tolist() == [8, 8, 8, 8]
    keys = split.kernel_keys()
    assert keys.end.tolist() == [21, 10] and keys.begin.tolist() == [0, 0]
    assert keys.slots[1, :10].tolist() == positions_to_slots([7], range(10))
    assert split.kernel_keys(sliding_window=8).begin.tolist() == [13, 2]
    two_chunks = [*seqs, SequenceSlice(start=0, num_new=3, block_table=[8])]
    assert ForwardBatch.build(two_chunks, BS).chunk_split() is None
    assert ForwardBatch.build(seqs[1:2], BS).chunk_split() is None  # the chunk alone


STEPS = {
    "a chunk beside decoding rows": [
        SequenceSlice(start=70, num_new=1, block_table=[7, 8, 9, 10, 11]),
        SequenceSlice(start=37, num_new=9, block_table=[3, 4, 5]),
        SequenceSlice(start=20, num_new=1, block_table=[12, 13]),
    ],
    "several chunks": [
        SequenceSlice(start=37, num_new=9, block_table=[3, 4, 5]),
        SequenceSlice(start=0, num_new=5, block_table=[6]),
        SequenceSlice(start=70, num_new=1, block_table=[7, 8, 9, 10, 11]),
        SequenceSlice(start=16, num_new=3, block_table=[12, 13]),
    ],
}


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize(("window", "softcap"), [(None, None), (6, None), (None, 20.0)])
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_a_step_with_prompt_tokens_attends_alike_where_the_kernel_is_built(
    step: str,
    dtype: torch.dtype,
    tolerance: float,
    window: int | None,
    softcap: float | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prompt chunks (after a cached context or not) and decoding rows in one step: the
    same attention and the same cache as where the kernel is not built (one padded SDPA)."""
    torch.manual_seed(1)
    attention = PagedAttention(6, 2, 8, 8**-0.5, sliding_window=window, logit_softcap=softcap)
    seqs = STEPS[step]
    batch = ForwardBatch.build(seqs, BS)
    assert (batch.chunk_split() is not None) == (step == "a chunk beside decoding rows")
    caches = [torch.randn(16 * BS, 2, 8, dtype=dtype) for _ in range(2)]
    t = batch.num_tokens
    q, k, v = (torch.randn(t, n, 8, dtype=dtype) for n in (6, 2, 2))
    assert kernels.paged_decode() is not None
    attention.bind_cache(*(c.clone() for c in caches))
    through_kernel = attention(q, k, v, batch)
    kernel_caches = attention.k_cache, attention.v_cache
    monkeypatch.setattr(kernels, "paged_decode", lambda: None)
    attention.bind_cache(*(c.clone() for c in caches))
    expected = attention(q, k, v, ForwardBatch.build(seqs, BS))
    assert through_kernel.dtype == dtype and through_kernel.shape == (t, 48)
    torch.testing.assert_close(through_kernel, expected, atol=tolerance, rtol=tolerance)
    assert torch.equal(kernel_caches[0], attention.k_cache)
    assert torch.equal(kernel_caches[1], attention.v_cache)


@pytest.mark.parametrize("beside", [False, True], ids=["alone", "beside a decoding row"])
def test_a_prompt_token_computed_alone_gets_the_bits_of_its_chunk(beside: bool) -> None:
    """A prompt whose prefix came from the cache computes its last token alone: that token
    is attended as a chunk (never by the decode kernel, which sums in another order), and
    gets exactly what it got as the last token of the chunk that computed the whole prompt.

    In bfloat16, the engine's dtype on the CPU.  With float32 inputs SDPA's one-query and
    nine-query results differ in the last bits (measured), so a float32 engine's cached
    prompt is only nearly the same."""
    dtype = torch.bfloat16
    torch.manual_seed(2)
    attention = PagedAttention(6, 2, 8, 8**-0.5)
    attention.bind_cache(*(torch.randn(16 * BS, 2, 8, dtype=dtype) for _ in range(2)))
    table = [3, 4, 5]
    chunk = ForwardBatch.build([SequenceSlice(start=28, num_new=9, block_table=table)], BS)
    q, k, v = (torch.randn(9, n, 8, dtype=dtype) for n in (6, 2, 2))
    whole = attention(q, k, v, chunk)[-1]
    decoding = [SequenceSlice(start=20, num_new=1, block_table=[12, 13])] if beside else []
    last = SequenceSlice(start=36, num_new=1, block_table=table, is_prompt=True)
    step = ForwardBatch.build([*decoding, last], BS)
    row = len(decoding)
    assert step.chunk_rows == [row] and not step.is_decode
    assert (step.chunk_split() is not None) == beside
    extra = 1 if beside else 0
    out = attention(*(torch.cat([x[-1:]] * (1 + extra)) for x in (q, k, v)), step)
    assert torch.equal(out[row], whole)
    as_decode = ForwardBatch.build([*decoding, dataclasses.replace(last, is_prompt=False)], BS)
    assert as_decode.is_decode and as_decode.chunk_rows == []

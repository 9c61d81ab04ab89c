"""Paged attention's shared-prefix path: the prefix is the sequences' common whole blocks,
and reading it once gives the same attention, and the same greedy text, as reading every
sequence's keys, through the CPU decode kernel and through PyTorch alike."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
import torch

from limelight.engine import kernels
from limelight.engine.layers import batch as batch_module
from limelight.engine.layers.attention import PagedAttention
from limelight.engine.layers.batch import KEY_BLOCK, PROMPT_GROUP, ForwardBatch, SequenceSlice
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


def test_a_step_with_prompt_tokens_or_drafts_is_split_in_two() -> None:
    """Prompt chunks apart; every other token (a decoding row, each of a row's drafts) a
    query row of the kernel with its own keys up to its position."""
    seqs = [
        SequenceSlice(start=20, num_new=1, block_table=[5, 6]),  # decoding
        SequenceSlice(start=40, num_new=4, block_table=[1, 2, 3, 4], is_prompt=True),
        SequenceSlice(start=9, num_new=3, block_table=[7]),  # a token and two drafts
        SequenceSlice(start=0, num_new=2, block_table=[8], is_prompt=True),
    ]
    batch = ForwardBatch.build(seqs, BS)
    assert batch.prompt_rows == [1, 3] and not batch.is_decode
    split = batch.chunk_split()
    assert split is not None and len(split.chunks) == 2
    turn, new = split.chunks
    assert turn.tokens == slice(1, 5) and turn.start == 40
    assert turn.slots.tolist() == positions_to_slots([1, 2, 3, 4], range(44))
    assert new.tokens == slice(8, 10) and new.start == 0 and new.slots.tolist() == [128, 129]
    assert split.decode_tokens.tolist() == [0, 5, 6, 7]
    keys = split.kernel_keys()
    assert keys.end.tolist() == [21, 10, 11, 12] and keys.begin.tolist() == [0, 0, 0, 0]
    assert keys.slots[3, :12].tolist() == positions_to_slots([7], range(12))
    assert split.kernel_keys(sliding_window=8).begin.tolist() == [13, 2, 3, 4]
    alone = split.decode_chunks()
    assert [(c.tokens, c.start, len(c.slots)) for c in alone] == [
        (slice(0, 1), 20, 21),
        (slice(5, 6), 9, 10),
        (slice(6, 7), 10, 11),
        (slice(7, 8), 11, 12),
    ]
    mask = split.chunk_mask(turn)  # one group of positions from 32, keys padded to 512
    assert mask.shape == (1, 1, PROMPT_GROUP, KEY_BLOCK)
    assert set(mask.unique().tolist()) == {0.0, float("-inf")}
    group = range(32, 32 + PROMPT_GROUP)
    assert (mask[0, 0] == 0).sum(dim=1).tolist() == [min(p + 1, 44) for p in group]
    windowed = split.chunk_mask(turn, sliding_window=8)[0, 0] == 0
    assert windowed.sum(dim=1).tolist() == [max(0, min(p, 43) - (p - 7) + 1) for p in group]
    assert split.chunk_mask(new).shape == (1, 1, PROMPT_GROUP, KEY_BLOCK)
    decoding = [SequenceSlice(start=20, num_new=1, block_table=[5, 6])] * 2
    assert ForwardBatch.build(decoding, BS).chunk_split() is None


STEPS = {
    "a chunk beside decoding rows": [
        SequenceSlice(start=70, num_new=1, block_table=[7, 8, 9, 10, 11]),
        SequenceSlice(start=37, num_new=9, block_table=[3, 4, 5], is_prompt=True),
        SequenceSlice(start=20, num_new=1, block_table=[12, 13]),
    ],
    "several chunks": [
        SequenceSlice(start=37, num_new=9, block_table=[3, 4, 5], is_prompt=True),
        SequenceSlice(start=0, num_new=5, block_table=[6], is_prompt=True),
        SequenceSlice(start=70, num_new=1, block_table=[7, 8, 9, 10, 11]),
        SequenceSlice(start=16, num_new=3, block_table=[12, 13], is_prompt=True),
    ],
    "drafts beside a chunk": [
        SequenceSlice(start=33, num_new=4, block_table=[3, 4, 5]),
        SequenceSlice(start=5, num_new=20, block_table=[6, 7], is_prompt=True),
        SequenceSlice(start=70, num_new=1, block_table=[8, 9, 10, 11, 12]),
    ],
}


def exact_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seqs: list[SequenceSlice],
    window: int | None,
    softcap: float | None,
) -> torch.Tensor:
    """Each new token against its sequence's keys up to its own (the last `window` of
    them), in float64: [T, H * D]."""
    out, token = [], 0
    groups = q.shape[1] // k_cache.shape[1]
    for s in seqs:
        for i in range(s.num_new):
            end = s.start + i + 1
            slots = torch.tensor(positions_to_slots(s.block_table, range(end)))
            slots = slots[-window:] if window else slots
            keys = k_cache[slots].double().repeat_interleave(groups, dim=1)  # [L, H, D]
            values = v_cache[slots].double().repeat_interleave(groups, dim=1)
            scores = torch.einsum("hd,lhd->hl", q[token].double(), keys) * 8**-0.5
            if softcap:
                scores = torch.tanh(scores / softcap) * softcap
            out.append(torch.einsum("hl,lhd->hd", scores.softmax(dim=-1), values).flatten())
            token += 1
    return torch.stack(out)


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize(("window", "softcap"), [(None, None), (6, None), (None, 20.0)])
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_a_step_with_prompt_tokens_attends_exactly_with_the_kernel_or_without(
    step: str,
    dtype: torch.dtype,
    tolerance: float,
    window: int | None,
    softcap: float | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prompt chunks (after a cached context or not), decoding rows and drafts in one
    step: attention as computed exactly, and the same cache, whether the other tokens go
    through the kernel or, where it is not built, through SDPA as chunks of one."""
    torch.manual_seed(1)
    attention = PagedAttention(6, 2, 8, 8**-0.5, sliding_window=window, logit_softcap=softcap)
    seqs = STEPS[step]
    batch = ForwardBatch.build(seqs, BS)
    caches = [torch.randn(16 * BS, 2, 8, dtype=dtype) for _ in range(2)]
    t = batch.num_tokens
    q, k, v = (torch.randn(t, n, 8, dtype=dtype) for n in (6, 2, 2))
    assert kernels.paged_decode() is not None
    attention.bind_cache(*(c.clone() for c in caches))
    through_kernel = attention(q, k, v, batch)
    kernel_caches = attention.k_cache, attention.v_cache
    expected = exact_attention(q, *kernel_caches, seqs, window, softcap).to(dtype)
    monkeypatch.setattr(kernels, "paged_decode", lambda: None)
    attention.bind_cache(*(c.clone() for c in caches))
    without = attention(q, k, v, ForwardBatch.build(seqs, BS))
    assert through_kernel.dtype == dtype and through_kernel.shape == (t, 48)
    for got in (through_kernel, without):
        torch.testing.assert_close(got, expected, atol=tolerance, rtol=tolerance)
    assert torch.equal(kernel_caches[0], attention.k_cache)
    assert torch.equal(kernel_caches[1], attention.v_cache)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [None, 40])
def test_a_prompt_token_gets_the_same_bits_however_its_prompt_was_cut(
    dtype: torch.dtype, window: int | None
) -> None:
    """A 700-token prompt computed in chunks of 256, or cut at other places (as when a
    prefix came from the cache, or a step's token budget ran out), alone or beside a
    decoding row: every token's attention is the same bits.  (One SDPA call a chunk gave
    other bits to ~20% of the rows, measured; prompt tokens through the decode kernel
    too.)"""
    torch.manual_seed(3)
    attention = PagedAttention(9, 3, 64, 64**-0.5, sliding_window=window)
    attention.bind_cache(*(torch.randn(60 * BS, 3, 64, dtype=dtype) for _ in range(2)))
    table, length = list(range(10, 54)), 700
    q = torch.randn(length, 9, 64, dtype=dtype) * 3
    k, v = (torch.randn(length, 3, 64, dtype=dtype) for _ in range(2))

    def run(cuts: list[int], beside: bool) -> torch.Tensor:
        out = []
        for start, end in itertools.pairwise([0, *cuts, length]):
            rows = [SequenceSlice(start, end - start, table, is_prompt=True)]
            tensors = [x[start:end] for x in (q, k, v)]
            if beside:  # a decoding row first
                rows.insert(0, SequenceSlice(start=20, num_new=1, block_table=[1, 2]))
                tensors = [torch.cat([t.new_zeros(1, *t.shape[1:]), t]) for t in tensors]
            out.append(attention(*tensors, ForwardBatch.build(rows, BS))[len(rows) - 1 :])
        return torch.cat(out)

    whole = run(list(range(256, length, 256)), beside=False)
    assert whole.shape == (length, 9 * 64)
    cuts = [([1, 2, 35, 511, 512, 513, 699], False), ([16, 160, 161, 600], True), ([699], True)]
    for at, beside in cuts:
        assert torch.equal(run(at, beside), whole)

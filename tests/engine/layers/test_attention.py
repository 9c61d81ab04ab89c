"""Paged attention's shared-prefix path: the prefix is the sequences' common whole blocks,
and reading it once gives the same attention, and the same greedy text, as reading every
sequence's keys, through the CPU decode kernel and through PyTorch alike."""

from __future__ import annotations

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
    calls = []  # steps whose attention read shared keys once
    if decode_path == "kernel":
        kernel = kernels.paged_decode()
        assert kernel is not None

        def counted_kernel(*args: Any) -> torch.Tensor:
            if len(args[6]):  # shared_rows
                calls.append(1)
            return kernel(*args)

        monkeypatch.setattr(kernels, "paged_decode", lambda: counted_kernel)
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

"""MiniMax-01 (hybrid lightning/softmax attention + MoE) against transformers, and its
linear-attention state carried across prefill chunks and restored from snapshots."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, MiniMaxConfig

from limelight.engine.layers.batch import ForwardBatch, SequenceSlice
from limelight.engine.models import CausalLM
from tests.engine.models.parity import BLOCK_SIZE, check_parity, load_limelight

LIN, FULL = "linear_attention", "full_attention"
TINY = dict(
    vocab_size=211,
    hidden_size=64,
    intermediate_size=48,
    num_hidden_layers=8,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_local_experts=4,
    num_experts_per_tok=2,
    max_position_embeddings=256,
    block_size=4,  # the reference's prefill then crosses several of its blocks
    layer_types=[LIN, LIN, LIN, FULL, LIN, LIN, LIN, FULL],
)
FACTORS = dict(
    linear_attn_alpha_factor=0.8,
    linear_attn_beta_factor=1.3,
    full_attn_alpha_factor=1.2,
    full_attn_beta_factor=0.7,
    mlp_alpha_factor=0.9,
    mlp_beta_factor=1.1,
)


@pytest.mark.parametrize(
    "config",
    [
        MiniMaxConfig(**TINY),
        MiniMaxConfig(**TINY, **FACTORS),
        MiniMaxConfig(**{**TINY, "layer_types": None}, sliding_window=6, tie_word_embeddings=True),
    ],
    ids=["hybrid", "residual-factors", "alternating-sliding-tied"],
)
def test_matches_transformers(config: MiniMaxConfig, tmp_path: Path) -> None:
    check_parity(config, tmp_path)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> CausalLM:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("minimax")
    AutoModelForCausalLM.from_config(MiniMaxConfig(**TINY, **FACTORS)).save_pretrained(folder)
    return load_limelight(folder)


def run_steps(
    model: CausalLM, steps: list[list[SequenceSlice]], tokens: list[list[int]]
) -> list[torch.Tensor]:
    """Run the steps in order; return each sequence's logits over all its computed tokens."""
    outputs: list[list[torch.Tensor]] = [[] for _ in tokens]
    with torch.no_grad():
        for step in steps:
            ids = torch.tensor(
                [t for s in step for t in tokens[s.state_slot - 1][s.start : s.start + s.num_new]]
            )
            logits = model.compute_logits(model(ids, ForwardBatch.build(step, BLOCK_SIZE)))
            for s, part in zip(step, logits.split([s.num_new for s in step]), strict=True):
                outputs[s.state_slot - 1].append(part)
    return [torch.cat(parts) for parts in outputs]


def one_shot(model: CausalLM, tokens: list[int]) -> torch.Tensor:
    model.allocate_caches(64 * BLOCK_SIZE, 2, 0, torch.float32)
    return run_steps(
        model, [[SequenceSlice(0, len(tokens), list(range(1, 17)), state_slot=1)]], [tokens]
    )[0]


def test_chunked_prefill_matches_one_shot(model: CausalLM) -> None:
    rng = random.Random(1)
    tokens = [rng.randrange(211) for _ in range(23)]
    want = one_shot(model, tokens)
    model.allocate_caches(64 * BLOCK_SIZE, 2, 0, torch.float32)
    table = [9, 3, 7, 1, 12, 5, 8]
    steps = [
        [SequenceSlice(0, 10, table, state_slot=1)],
        [SequenceSlice(10, 13, table, state_slot=1)],
    ]
    got = run_steps(model, steps, [tokens])[0]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_resume_from_snapshot_shares_a_prefix(model: CausalLM) -> None:
    """B shares A's first 8 tokens: it reuses A's KV blocks and A's state snapshot after 8."""
    rng = random.Random(2)
    a = [rng.randrange(211) for _ in range(16)]
    b = a[:8] + [rng.randrange(211) for _ in range(9)]
    want = one_shot(model, b)[8:]
    model.allocate_caches(64 * BLOCK_SIZE, 3, 1, torch.float32)
    table_a = [4, 2, 6, 1]
    table_b = [*table_a[:2], 7, 3, 5]
    steps = [
        [SequenceSlice(0, 16, table_a, state_slot=1, snapshots=[(8, 0)])],
        [SequenceSlice(8, 9, table_b, state_slot=2, restore_from=0)],
    ]
    got = run_steps(model, steps, [a, b])[1]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)

"""The engine on the hybrid MiniMax model: linear-attention state through the prefix cache,
chunked prefill, batching and preemption."""

import pytest

from limelight.engine.types import SamplingParams
from tests.engine.fakes import tiny_config, tiny_engine, tiny_model
from tests.engine.test_llm_engine import prompts, run_all

LIN, FULL = "linear_attention", "full_attention"
PARAMS = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)


@pytest.fixture(scope="module")
def hybrid():  # type: ignore[no-untyped-def]
    config = tiny_config(
        "minimax",
        num_hidden_layers=4,
        layer_types=[LIN, LIN, LIN, FULL],
        num_local_experts=4,
        num_experts_per_tok=2,
        intermediate_size=64,
    )
    return tiny_model(config, seed=3)


def test_shared_prefix_restores_the_state_and_computes_only_the_suffix(hybrid) -> None:  # type: ignore[no-untyped-def]
    prefix = (prompts(1, seed=5)[0] * 30)[:500]
    first, second = [*prefix, 7, 8, 9], [*prefix, 11, 12, 13, 14]
    engine = tiny_engine(hybrid, max_num_batched_tokens=128)  # chunks end mid-block
    run_all(engine, [first], PARAMS)
    before = engine.stats
    warm = run_all(engine, [second], PARAMS)
    after = engine.stats
    assert after.num_prefix_hit_tokens - before.num_prefix_hit_tokens == 496
    assert after.num_computed_tokens - before.num_computed_tokens == 4 + 4 + PARAMS.max_tokens - 1
    cold = run_all(tiny_engine(hybrid, enable_prefix_caching=False), [second], PARAMS)
    assert warm == cold


def test_without_a_snapshot_the_prefix_is_not_taken(hybrid) -> None:  # type: ignore[no-untyped-def]
    prefix = (prompts(1, seed=6)[0] * 30)[:300]
    engine = tiny_engine(hybrid, num_state_snapshots=2)  # one usable snapshot slot
    run_all(engine, [[*prefix, 1, 2]], PARAMS)
    # the only snapshot is the newest block boundary (after 304 tokens, in the output)
    before = engine.stats
    out = run_all(engine, [[*prefix, 3, 4]], PARAMS)
    assert engine.stats.num_prefix_hit_tokens == before.num_prefix_hit_tokens
    assert out == run_all(
        tiny_engine(hybrid, enable_prefix_caching=False), [[*prefix, 3, 4]], PARAMS
    )


def test_concurrent_and_preempted_runs_equal_single_runs(hybrid) -> None:  # type: ignore[no-untyped-def]
    batch = prompts(6, seed=8)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    alone = [run_all(tiny_engine(hybrid), [p], params)[0] for p in batch]
    small = tiny_engine(hybrid, num_kv_blocks=12, block_size=8, max_num_batched_tokens=32)
    assert run_all(small, batch, params) == alone
    assert small.stats.num_preemptions > 0

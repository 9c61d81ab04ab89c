"""The engine end to end on a tiny random model: batching, prefix cache, preemption."""

import random

import pytest

from limelight.engine.errors import RequestError
from limelight.engine.llm_engine import LLMEngine
from limelight.engine.types import SamplingParams
from tests.engine.fakes import VOCAB, tiny_engine

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


def prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(4, VOCAB) for _ in range(rng.randrange(1, 60))] for _ in range(n)]


def run_all(
    engine: LLMEngine, batch: list[list[int]], params: SamplingParams = GREEDY
) -> list[list[int]]:
    ids = [engine.add_request(p, params) for p in batch]
    while engine.has_unfinished:
        engine.step()
    return [engine.pop_output(i).token_ids for i in ids]


def test_concurrent_greedy_equals_one_at_a_time() -> None:
    batch = prompts(16)
    engine = tiny_engine(max_num_batched_tokens=64)  # long prompts get chunked
    together = run_all(engine, batch)
    alone = [run_all(tiny_engine(), [p])[0] for p in batch]
    assert together == alone
    assert all(len(t) == GREEDY.max_tokens for t in together)


def test_shared_prefix_computes_only_the_suffix() -> None:
    prefix = prompts(1, seed=1)[0] * 12
    prefix = (prefix * 20)[:500]
    first, second = [*prefix, 5, 6, 7], [*prefix, 9, 10, 11, 12]
    engine = tiny_engine()
    run_all(engine, [first])
    before = engine.stats
    warm = run_all(engine, [second])
    after = engine.stats
    cached = after.num_prefix_hit_tokens - before.num_prefix_hit_tokens
    assert cached == 496  # every whole 16-token block of the shared 500 tokens
    computed = after.num_computed_tokens - before.num_computed_tokens
    assert computed == len(second) - 496 + GREEDY.max_tokens - 1
    assert warm == run_all(tiny_engine(enable_prefix_caching=False), [second])


def test_small_kv_budget_preempts_and_still_gives_the_same_outputs() -> None:
    batch = prompts(8, seed=2)
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    small = tiny_engine(num_kv_blocks=14, block_size=8)
    assert run_all(small, batch, params) == run_all(tiny_engine(), batch, params)
    assert small.stats.num_preemptions > 0
    assert small.block_manager.num_free_blocks == 14


def test_seeded_sampling_does_not_depend_on_the_batch() -> None:
    params = SamplingParams(temperature=0.9, top_p=0.9, top_k=50, seed=7, max_tokens=10)
    alone = run_all(tiny_engine(), [[5, 6, 7]], params)[0]
    crowd = run_all(tiny_engine(), [[5, 6, 7], *prompts(5)], params)[0]
    assert alone == crowd


def test_stop_strings_logprobs_and_limits() -> None:
    engine = tiny_engine()
    free = run_all(
        engine, [[40, 41]], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    )[0]
    text = engine.tokenizer.decode(free)
    stop = text[5:7]
    out_id = engine.add_request(
        [40, 41],
        SamplingParams(temperature=0, max_tokens=20, stop=[stop], logprobs=3, ignore_eos=True),
    )
    while engine.has_unfinished:
        engine.step()
    out = engine.pop_output(out_id)
    assert out.finish_reason == "stop" and stop not in out.text
    assert out.text == text[: text.find(stop)]
    assert all(len(lp.top) == 3 and lp.top[0][1] >= lp.logprob - 1e-6 for lp in out.logprobs)
    assert out.logprobs[0].token_id == out.token_ids[0]


def test_bad_requests_get_clear_errors() -> None:
    engine = tiny_engine(max_model_len=64)
    with pytest.raises(RequestError, match="64"):
        engine.add_request([5] * 64, GREEDY)
    with pytest.raises(RequestError, match="empty"):
        engine.add_request([], GREEDY)
    with pytest.raises(RequestError, match="token ids"):
        engine.add_request([VOCAB + 5], GREEDY)
    with pytest.raises(RequestError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(RequestError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(RequestError, match="max_tokens"):
        SamplingParams(max_tokens=0)


def test_generation_stops_at_the_context_length() -> None:
    engine = tiny_engine(max_model_len=32)
    out = run_all(
        engine, [[5] * 20], SamplingParams(temperature=0, max_tokens=100, ignore_eos=True)
    )[0]
    assert len(out) == 12


def test_a_bad_request_in_a_batch_leaves_nothing_queued() -> None:
    from limelight.engine.llm import LLM

    llm = LLM.__new__(LLM)  # the engine alone, without loading a checkpoint
    llm.engine = tiny_engine()
    with pytest.raises(RequestError, match="empty"):
        llm.generate([[5, 6], []], GREEDY)
    assert not llm.engine.has_unfinished and not llm.engine.requests
    assert llm.generate([[5, 6]], GREEDY)[0].token_ids == run_all(tiny_engine(), [[5, 6]])[0]

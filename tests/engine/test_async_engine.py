"""Many concurrent streams over one engine; cancelled streams free their blocks."""

import asyncio
import threading

import pytest
import torch

from limelight.engine.async_engine import AsyncEngine
from limelight.engine.errors import CheckpointError, RequestError
from limelight.engine.llm_engine import LLMEngine
from limelight.engine.threads import one_thread
from limelight.engine.types import SamplingParams
from tests.engine.fakes import tiny_engine
from tests.engine.test_llm_engine import prompts, run_all

PARAMS = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)


@pytest.fixture
def engine():  # type: ignore[no-untyped-def]
    engine = AsyncEngine(tiny_engine())
    yield engine
    engine.shutdown()


async def collect(engine: AsyncEngine, prompt: list[int]) -> tuple[list[int], int]:
    tokens, deltas = [], 0
    async for delta in engine.stream(prompt, PARAMS):
        tokens += delta.token_ids
        deltas += 1
    return tokens, deltas


async def test_concurrent_streams_match_batch_generation(engine: AsyncEngine) -> None:
    batch = prompts(8, seed=4)
    results = await asyncio.gather(*(collect(engine, p) for p in batch))
    assert [tokens for tokens, _ in results] == run_all(tiny_engine(), batch, PARAMS)
    assert all(deltas == PARAMS.max_tokens for _, deltas in results)  # one delta per token


async def test_cancelled_stream_frees_its_blocks(engine: AsyncEngine) -> None:
    blocks = engine.engine.block_manager
    total = blocks.num_free_blocks
    long = SamplingParams(temperature=0, max_tokens=2000, ignore_eos=True)
    stream = engine.stream([5] * 40, long)
    async for _ in stream:
        assert blocks.num_free_blocks < total
        break
    await stream.aclose()
    for _ in range(200):
        if blocks.num_free_blocks == total and not engine.engine.has_unfinished:
            break
        await asyncio.sleep(0.01)
    assert blocks.num_free_blocks == total
    assert not engine.engine.requests


async def test_bad_request_raises_before_streaming(engine: AsyncEngine) -> None:
    with pytest.raises(RequestError, match="empty"):
        async for _ in engine.stream([], PARAMS):
            pass


async def test_generate_reports_the_prefix_cache(engine: AsyncEngine) -> None:
    prompt = prompts(1, seed=9)[0] * 3
    first = await engine.generate(prompt, PARAMS)
    second = await engine.generate(prompt, PARAMS)
    assert first.token_ids == second.token_ids == run_all(tiny_engine(), [prompt], PARAMS)[0]
    assert first.num_cached_tokens == 0
    assert second.num_cached_tokens == (len(prompt) - 1) // 16 * 16
    assert second.text == engine.engine.tokenizer.decode(second.token_ids)


def test_a_built_engine_loads_in_the_worker_thread_and_errors_reach_the_caller() -> None:
    """Building in the worker keeps the process at one OpenMP team (engine/threads.py)."""
    built_in: list[str] = []

    def build() -> LLMEngine:
        built_in.append(threading.current_thread().name)
        return tiny_engine()

    engine = AsyncEngine(build)
    try:
        assert built_in == ["limelight-engine"]
        assert asyncio.run(collect(engine, prompts(1, seed=1)[0]))[1] == PARAMS.max_tokens
    finally:
        engine.shutdown()

    def broken() -> LLMEngine:
        raise CheckpointError("no such model")

    with pytest.raises(CheckpointError, match="no such model"):
        AsyncEngine(broken)


def test_one_thread_is_this_threads_and_put_back() -> None:
    before = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_call_runs_in_the_engine_thread_between_steps(engine: AsyncEngine) -> None:
    def where(inner: LLMEngine) -> tuple[str, bool]:
        return threading.current_thread().name, inner is engine.engine

    assert engine.call(where) == ("limelight-engine", True)

    def broken(inner: LLMEngine) -> None:
        raise ValueError("from the engine thread")

    with pytest.raises(ValueError, match="from the engine thread"):
        engine.call(broken)
    tokens, _ = asyncio.run(collect(engine, prompts(1, seed=2)[0]))  # still serving
    assert tokens == run_all(tiny_engine(), prompts(1, seed=2), PARAMS)[0]

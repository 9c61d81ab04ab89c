"""limelight's side of bench/engine.py, run as its own process on the benchmark's threads.

`python -m bench.engine_limelight --model M --workload JSON` loads the model as the
server does (`AsyncEngine.from_pretrained`, in the engine's own thread), measures every
figure of the workload and prints one JSON object.  Concurrent and shared-prefix figures
go through `AsyncEngine` streams, as a server's requests do; the single-stream figures
step the same engine directly, one token per step, as llama-cpp-python is called, in the
engine's thread (`AsyncEngine.call`): a second thread computing with PyTorch would slow
both (limelight/engine/threads.py).  Peak RSS and CPU time are this process's own
over the concurrent figure (`bench.meter`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from bench.engine_workload import PRECISIONS, Prompts, Workload, progress
from bench.meter import ProcessMeter
from limelight import AsyncEngine, SamplingParams
from limelight.engine.layers.quantized import QuantizedLinear
from limelight.engine.llm_engine import LLMEngine


def measure(streams: AsyncEngine, workload: Workload) -> dict[str, Any]:
    """Every figure; `streams` is shut down at the end."""
    engine = streams.engine
    prompts = Prompts.build(
        lambda text: streams.tokenizer.encode(text, add_special_tokens=False), workload
    )
    progress("limelight", f"{workload.num_streams} concurrent streams")
    throughput, usage = asyncio.run(_concurrent(streams, prompts.streams, workload))
    progress("limelight", "shared-prefix TTFT")
    ttft, cached = asyncio.run(_shared_prefix_ttft(streams, prompts))
    progress("limelight", "single-stream decode")
    decode = statistics.median(
        streams.call(lambda e: _decode_rate(e, prompts.decode, workload.num_new_tokens))
        for _ in range(workload.num_repeats)
    )
    progress("limelight", "prefill")
    prefill = statistics.median(
        streams.call(lambda e, ids=ids: _prefill_rate(e, ids)) for ids in prompts.prefill
    )
    streams.shutdown()
    return {
        "decode": decode,
        "prefill": prefill,
        "concurrent_throughput": throughput,
        "shared_prefix_ttft": ttft,
        "peak_rss": usage["peak_rss_mib"],
        "cpu_seconds_per_mtok": usage["cpu_seconds_per_mtok"],
        "concurrent_cpu_seconds": usage["cpu_seconds"],
        "shared_prefix_cached_tokens": cached,
        "weight_bytes": _weight_bytes(engine),
        "prompt_fingerprint": prompts.fingerprint,
    }


def _greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)


def _decode_rate(engine: LLMEngine, prompt: list[int], num_tokens: int) -> float:
    """Tokens per second after the first one (the first carries the prefill)."""
    request_id = engine.add_request(prompt, _greedy(num_tokens))
    stamps: list[float] = []
    while engine.has_unfinished:
        stamps.extend(time.perf_counter() for _ in engine.step())  # one delta per token
    assert len(engine.pop_output(request_id).token_ids) == num_tokens == len(stamps)
    return (num_tokens - 1) / (stamps[-1] - stamps[0])


def _prefill_rate(engine: LLMEngine, prompt: list[int]) -> float:
    start = time.perf_counter()
    request_id = engine.add_request(prompt, _greedy(1))
    while engine.has_unfinished:
        engine.step()
    elapsed = time.perf_counter() - start
    assert engine.pop_output(request_id).num_cached_tokens == 0, "prefill hit the prefix cache"
    return len(prompt) / elapsed


async def _concurrent(
    streams: AsyncEngine, prompts: list[list[int]], workload: Workload
) -> tuple[float, dict[str, float]]:
    """Aggregate tokens/s of all streams at once, and this process's peak RSS and CPU."""
    await asyncio.gather(*(streams.generate(p, _greedy(4)) for p in prompts[:2]))  # warm-up
    params = _greedy(workload.num_new_tokens)

    async def one(prompt: list[int]) -> int:
        return sum([len(d.token_ids) async for d in streams.stream(prompt, params)])

    meter = ProcessMeter(os.getpid())
    meter.start()
    start = time.perf_counter()
    counts = await asyncio.gather(*(one(p) for p in prompts))
    elapsed = time.perf_counter() - start
    usage = meter.stop()
    num_tokens = sum(counts)
    assert num_tokens == len(prompts) * workload.num_new_tokens
    return num_tokens / elapsed, {
        "peak_rss_mib": usage.peak_rss_mib,
        "cpu_seconds": usage.cpu_seconds,
        "cpu_seconds_per_mtok": usage.cpu_seconds / num_tokens * 1e6,
    }


async def _shared_prefix_ttft(streams: AsyncEngine, prompts: Prompts) -> tuple[float, int]:
    """Median time to first token of new conversations after one used the same prefix."""
    first, *others = prompts.shared
    await streams.generate(first, _greedy(16))  # the conversation that came before
    ttfts, cached = [], []
    for prompt in others:
        start = time.perf_counter()
        output = await streams.generate(prompt, _greedy(1))
        ttfts.append(time.perf_counter() - start)
        cached.append(output.num_cached_tokens)
    return statistics.median(ttfts), min(cached)


def _weight_bytes(engine: LLMEngine) -> int:
    """Bytes of weights one decode step reads: the quantized copies where a layer has one."""
    model = engine.runner.model
    quantized = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    if quantized:  # their own buffers (not the dense layers'), and the norms and biases
        rest = [p for p in model.parameters() if p.ndim == 1]
        parts = [b for m in quantized for b in m.buffers(recurse=False)] + rest
        return sum(t.numel() * t.element_size() for t in parts)
    return _all_weight_bytes(engine)


def _all_weight_bytes(engine: LLMEngine) -> int:
    """Bytes of the model's parameters and buffers: what one decode step reads at least."""
    model = engine.runner.model
    tensors = {t.data_ptr(): t for t in (*model.parameters(), *model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--workload", required=True, help="a Workload as JSON")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="int4")
    args = parser.parse_args(argv)
    workload = Workload.from_json(args.workload)
    torch.set_num_threads(workload.num_threads)
    streams = AsyncEngine.from_pretrained(args.model, compile=True, **PRECISIONS[args.precision])
    print(json.dumps(measure(streams, workload)), flush=True)


if __name__ == "__main__":
    main()

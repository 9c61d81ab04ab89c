"""Decode speed with speculative decoding against the same engine without it.

`python bench/speculative.py [--speculative ngram] [--k 4] [--max-tokens 96] [--repeats 3]
[--threads N] [--model M]`

Two tasks, greedy, the same prompts for both engines: *grounded* (a passage, then "quote
the sentence that says ..."), where the answer copies its input and prompt lookup should
shine, and *chat* (free questions), where it has little to copy.  Requests run one at a
time (single-stream latency, where speculation is meant to help); each request's decode
time runs from its first token to its last, so prefill is left out.  The two engines
alternate request by request and the median of the repeats is kept, so both see the same
machine load.  It prints, per task, the acceptance rate (accepted / proposed drafts),
decode tokens/s without and with speculation, their ratio, and whether the outputs were
identical (they must be: speculation is lossless).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from limelight import LLM
from limelight.engine.llm_engine import LLMEngine
from limelight.engine.types import SamplingParams

DEFAULT_MODEL = "smollm2-135m-instruct"
PASSAGE = (
    "The lighthouse on Gull Rock was built in 1871 from granite quarried on the mainland. "
    "Its lamp was first lit with whale oil, then with kerosene, and was finally electrified "
    "in 1934. For sixty years the Marsh family kept the light, passing the duty from father "
    "to daughter. Mary Marsh once rowed through a winter storm to rescue eleven sailors from "
    "a wrecked schooner. The tower is ninety-two feet tall and has one hundred and twelve "
    "steps. Since 1989 the light has been automatic, and the keeper's cottage is now a small "
    "museum that opens every summer."
)
TOPICS = (
    "how tall the tower is",
    "what the lamp was first lit with",
    "who rowed through a winter storm",
    "what the keeper's cottage is now",
)
CHAT = (
    "Give me three tips for sleeping better.",
    "Write a short poem about autumn leaves.",
    "Explain why the sky is blue to a child.",
    "What should I pack for a weekend hiking trip?",
)


def task_prompts(llm: LLM) -> dict[str, list[str]]:
    def chat(text: str) -> str:
        return llm.apply_chat_template([{"role": "user", "content": text}])

    grounded = [
        chat(f"{PASSAGE}\n\nQuote the sentence from the passage above that says {topic}.")
        for topic in TOPICS
    ]
    return {"grounded": grounded, "chat": [chat(c) for c in CHAT]}


def decode(engine: LLMEngine, prompt: str, params: SamplingParams) -> tuple[list[int], float]:
    """(output tokens, decode seconds from the first token to the last)."""
    request_id = engine.add_request(prompt, params)
    first = None
    while engine.has_unfinished:
        deltas = engine.step()
        if first is None and any(d.token_ids for d in deltas):
            first = time.perf_counter()
    assert first is not None
    seconds = time.perf_counter() - first
    return engine.pop_output(request_id).token_ids, seconds


def measure(
    plain: LLMEngine, spec: LLMEngine, prompts: list[str], params: SamplingParams, repeats: int
) -> dict[str, float]:
    before = spec.stats
    rates: dict[str, list[float]] = {"plain": [], "spec": []}
    identical = True
    for _ in range(repeats):
        totals = {"plain": [0, 0.0], "spec": [0, 0.0]}
        for prompt in prompts:  # alternate, so both engines see the same load
            outs = {}
            for name, engine in (("plain", plain), ("spec", spec)):
                tokens, seconds = decode(engine, prompt, params)
                outs[name] = tokens
                totals[name][0] += len(tokens) - 1  # the first token is prefill's
                totals[name][1] += seconds
            identical &= outs["plain"] == outs["spec"]
        for name, (num_tokens, seconds) in totals.items():
            rates[name].append(num_tokens / seconds)
    after = spec.stats
    drafts = after.num_draft_tokens - before.num_draft_tokens
    accepted = after.num_accepted_tokens - before.num_accepted_tokens
    plain_rate, spec_rate = statistics.median(rates["plain"]), statistics.median(rates["spec"])
    return {
        "acceptance": accepted / max(drafts, 1),
        "drafts_per_step": drafts / max(after.num_steps - before.num_steps, 1),
        "plain": plain_rate,
        "spec": spec_rate,
        "speedup": spec_rate / plain_rate,
        "identical": float(identical),
    }


def print_report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(
        f"{args.model}, greedy, {args.max_tokens} tokens max, one request at a time, "
        f"speculative={args.speculative!r} k={args.k}, {torch.get_num_threads()} threads"
    )
    print(f"{'task':<10} {'accept':>7} {'plain tok/s':>12} {'spec tok/s':>11} {'speedup':>8}  same")
    for task, r in results.items():
        print(
            f"{task:<10} {r['acceptance']:7.1%} {r['plain']:12.1f} {r['spec']:11.1f} "
            f"{r['speedup']:7.2f}x  {'yes' if r['identical'] else 'NO'}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="packaged name, .gguf or folder")
    parser.add_argument("--speculative", default="ngram", help="'ngram' or a draft model")
    parser.add_argument("--k", type=int, default=4, help="draft tokens per step")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, median kept")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--tasks", nargs="*", default=["grounded", "chat"])
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    plain = LLM(args.model)
    spec = LLM(args.model, speculative=args.speculative, num_speculative_tokens=args.k)
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    prompts = task_prompts(plain)
    for engine in (plain.engine, spec.engine):  # warm-up
        decode(engine, prompts["chat"][0], SamplingParams(temperature=0, max_tokens=8))
    results = {
        task: measure(plain.engine, spec.engine, prompts[task], params, args.repeats)
        for task in args.tasks
    }
    print_report(results, args)
    return 0 if all(r["identical"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The cost per token of grammar-constrained decoding, against the same run unconstrained.

`python bench/structured.py [--num-prompts 32] [--repeats 3] [--threads N] [--model M]`
generates character sheets under a nested JSON schema (objects, arrays, enums, required
fields), greedily, then the same prompts unconstrained with each request's `max_tokens`
set to its constrained output's length and `ignore_eos` on: both runs compute the same
number of tokens in batches of the same shapes, so the difference in time is the
constraint's own work (a bitmask fill per constrained row and step, the mask on the
logits, advancing the matcher).  Runs alternate and the median of each is kept.

It prints tokens/s with and without the constraint and their ratio, and, measured apart
from the model by replaying the constrained outputs through fresh matchers step by step,
the constraint's time per token and its share of an unconstrained token's time.  The
grammar's one-off compile (and llguidance's tokenizer, built once per engine) is
reported separately; it happens at `add_request`, not per token.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from limelight import LLM, Constraint, RequestOutput, SamplingParams
from limelight.engine.structured import GrammarCompiler, mask_logits

DEFAULT_MODEL = "smollm2-135m-instruct"
CONCEPTS = (
    "a grumpy dwarf blacksmith", "an elven archer", "a young wizard's apprentice",
    "a pirate captain", "a wandering monk", "a cunning thief", "a holy knight",
    "a bard who sings sea shanties", "a retired necromancer", "a halfling cook",
)  # fmt: skip
_SHORT_STRING = {"type": "string", "minLength": 1, "maxLength": 16}
_SCORE = {"type": "integer", "minimum": 1, "maximum": 20}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 24},
        "class": {"enum": ["warrior", "mage", "rogue", "bard", "cleric"]},
        "level": _SCORE,
        "stats": {
            "type": "object",
            "properties": {"strength": _SCORE, "wisdom": _SCORE},
            "required": ["strength", "wisdom"],
            "additionalProperties": False,
        },
        "skills": {"type": "array", "items": _SHORT_STRING, "minItems": 1, "maxItems": 3},
        "inventory": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "item": _SHORT_STRING,
                    "count": {"type": "integer", "minimum": 1, "maximum": 99},
                },
                "required": ["item", "count"],
                "additionalProperties": False,
            },
            "maxItems": 2,
        },
        "alignment": {"enum": ["good", "neutral", "evil"]},
    },
    "required": ["name", "class", "level", "stats", "skills", "inventory"],
    "additionalProperties": False,
}


def character_prompts(llm: LLM, num_prompts: int) -> list[str]:
    """Chat prompts asking for character sheets, all different for up to 200."""
    asks = [
        f"Write a character sheet for {CONCEPTS[i % 10]} of level {1 + i // 10 % 20} as JSON."
        for i in range(num_prompts)
    ]
    return [llm.apply_chat_template([{"role": "user", "content": ask}]) for ask in asks]


def timed_generate(
    llm: LLM, prompts: list[str], params: list[SamplingParams]
) -> tuple[float, list[RequestOutput]]:
    """(tokens/s, outputs)."""
    start = time.perf_counter()
    outputs = llm.generate(prompts, params)
    seconds = time.perf_counter() - start
    return sum(len(o.token_ids) for o in outputs) / seconds, outputs


def replay_seconds_per_token(llm: LLM, outputs: list[RequestOutput]) -> float:
    """The constraint's work alone: each step, one mask over the rows still going (on
    logits of the model's width), then each row's matcher advanced by its output token."""
    compiler: GrammarCompiler = llm.engine.grammars
    matchers = [compiler.matcher(Constraint.json_schema(SCHEMA)) for _ in outputs]
    logits = torch.zeros(len(outputs), llm.engine.vocab_size)
    start = time.perf_counter()
    for step in range(max(len(o.token_ids) for o in outputs)):
        rows = [i for i, o in enumerate(outputs) if step < len(o.token_ids)]
        mask_logits(logits[: len(rows)], [matchers[i] for i in rows])
        for i in rows:
            matchers[i].advance(outputs[i].token_ids[step])
    seconds = time.perf_counter() - start
    assert all(m.is_done and not m.error for m in matchers), "replay left the grammar"
    return seconds / sum(len(o.token_ids) for o in outputs)


def measure(llm: LLM, num_prompts: int, repeats: int, max_tokens: int) -> dict[str, float]:
    prompts = character_prompts(llm, num_prompts)
    constraint = Constraint.json_schema(SCHEMA)
    start = time.perf_counter()
    llm.engine.grammars.matcher(constraint)  # llguidance's tokenizer and the grammar, once
    compile_seconds = time.perf_counter() - start
    constrained = [SamplingParams(temperature=0, max_tokens=max_tokens, constraint=constraint)]
    _, outputs = timed_generate(llm, prompts, constrained * num_prompts)  # warm-up
    assert all(o.finish_reason == "stop" for o in outputs), "raise --max-tokens"
    plain = [
        SamplingParams(temperature=0, max_tokens=len(o.token_ids), ignore_eos=True) for o in outputs
    ]
    with_rates, without_rates = [], []
    for _ in range(repeats):
        with_rates.append(timed_generate(llm, prompts, constrained * num_prompts)[0])
        without_rates.append(timed_generate(llm, prompts, plain)[0])
    with_rate, without_rate = statistics.median(with_rates), statistics.median(without_rates)
    replay = statistics.median(replay_seconds_per_token(llm, outputs) for _ in range(repeats))
    return {
        "tokens": sum(len(o.token_ids) for o in outputs),
        "compile_ms": compile_seconds * 1e3,
        "with": with_rate,
        "without": without_rate,
        "ratio": with_rate / without_rate,
        "replay_us": replay * 1e6,
        "replay_share": replay * without_rate,
    }


def print_report(result: dict[str, float], num_prompts: int) -> None:
    print(f"{num_prompts} greedy character sheets, {result['tokens']:.0f} tokens per run")
    print(f"first compile (tokenizer + grammar): {result['compile_ms']:.0f} ms, once")
    print(f"tokens/s with the JSON schema:    {result['with']:8.1f}")
    print(f"tokens/s without (same lengths):  {result['without']:8.1f}")
    print(f"ratio with / without:             {result['ratio']:8.3f}")
    print(
        f"constraint alone (replayed): {result['replay_us']:.1f} us per token, "
        f"{100 * result['replay_share']:.1f}% of an unconstrained token's time"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="packaged name, .gguf or folder")
    parser.add_argument("--num-prompts", type=int, default=32, help="requests per batch")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, median kept")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    llm = LLM(args.model, max_num_seqs=args.num_prompts)
    print_report(measure(llm, args.num_prompts, args.repeats, args.max_tokens), args.num_prompts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Latency at the client, limelight beside an assembled stack, in one run.

`python bench/e2e.py [--json] [--quick] [--skip-assembled]` (or `limelight bench e2e ...`)
simulates users chatting with a character whose definition is over 1,000 tokens and who
has stored memories of each of them, connected as the web app connects: Server-Sent
Events with speech (bench/e2e_limelight.py).  In the same run, the same users, messages
and think times go to an assembled stack of separate processes: llama.cpp's
OpenAI-compatible server on the same GGUF, a retrieval service over HTTP and a speech
service fed the whole reply (bench/e2e_assembled.py).  It reports p50/p95 time to first
token and to first audio for both, the ratios limelight ÷ assembled, and the goals at
4 users on 2 cores: TTFT p50 ≤ 150 ms, first audio p50 ≤ 400 ms, each ≤ 0.5× the
assembled stack's.  The stacks run one after the other, never at once.  With `--json`
the last line is one JSON object (`ttft_p50_ms` ... and `assembled_ttft_p50_ms` ...).

A full run takes about 5 minutes on an idle 2-core machine, most of it the memory worker
forming the warm-up memories (`--warmup-turns` shortens it).  The figures move with the
machine's load, which is printed beside them; measured with the defaults at a load
average of 0.3-2.1 (p50, ms, limelight / assembled; four runs):
    time to first token     528-745 / 9,476-11,895    ratio 0.05-0.08
    time to first audio     2,668-2,983 / 11,161-14,606   ratio 0.20-0.24
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np

from bench import e2e_assembled, e2e_limelight
from bench.e2e_client import REQUEST_TIMEOUT_S, Stack, TurnResult, run_users
from bench.e2e_tts import TTS_THREADS
from bench.e2e_workload import USERS, UserScript, Workload
from bench.meter import CompetingLoad

MODEL = "smollm2-135m-instruct"  # what `limelight serve` loads by default
FIGURES = ("ttft_p50_ms", "ttft_p95_ms", "first_audio_p50_ms", "first_audio_p95_ms")
GOALS_MS = {"ttft_p50_ms": 150.0, "first_audio_p50_ms": 400.0}
GOAL_RATIO = 0.5  # limelight ÷ assembled, for each figure in GOALS_MS
MIN_DEFINITION_TOKENS = 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    workload = _workload(args, parser)
    skipped = _skip_reason(args.skip_assembled)
    load_before, competing = os.getloadavg()[0], CompetingLoad()
    competing.start()
    with tempfile.TemporaryDirectory(prefix="limelight-e2e-") as folder:
        ours, setup = _run_limelight(Path(folder), workload)
    theirs = None if skipped else _run_assembled(setup, workload, args.threads)
    settings = {
        **_settings(workload, setup, args.threads),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "competing_cpu_share": competing.stop(),  # other processes' share of the cores
    }
    report = build_report(ours, theirs, settings, skipped)
    print_report(report)
    if args.json:
        print(json.dumps(report))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="limelight bench e2e",
        description="time to first token and first audio: limelight vs an assembled stack",
    )
    defaults = Workload()
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    parser.add_argument("--quick", action="store_true", help="2 users, 1 turn (smoke test)")
    parser.add_argument("--users", type=int, default=defaults.num_users, help="concurrent")
    parser.add_argument("--turns", type=int, default=defaults.num_turns, help="per user")
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens, help="per reply")
    parser.add_argument(
        "--warmup-turns",
        type=int,
        default=defaults.num_warmup_turns,
        help="per user, in the earlier session that forms memories (1 to 4)",
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 2, help="llama.cpp's (default: cores)"
    )
    parser.add_argument(
        "--skip-assembled", action="store_true", help="limelight only (no llama-cpp-python)"
    )
    return parser


def _workload(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Workload:
    if args.quick:
        return Workload(num_users=2, num_turns=1, num_warmup_turns=2, max_tokens=32)
    if not 1 <= args.users <= len(USERS):
        parser.error(f"--users: 1 to {len(USERS)} (the scripted users)")
    if args.turns < 1 or args.max_tokens < 1:
        parser.error("--turns and --max-tokens must be at least 1")
    if not 1 <= args.warmup_turns <= min(len(u.warmup) for u in USERS):
        parser.error("--warmup-turns: 1 to 4")
    return Workload(
        num_users=args.users,
        num_turns=args.turns,
        num_warmup_turns=args.warmup_turns,
        max_tokens=args.max_tokens,
    )


def _skip_reason(skip: bool) -> str | None:
    if skip:
        return "--skip-assembled"
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (bench/install_peer.sh)"
    return None


def _run_limelight(folder: Path, workload: Workload) -> tuple[list[TurnResult], dict[str, Any]]:
    _progress("limelight: starting the server")
    with e2e_limelight.limelight_server(folder) as server:
        _progress(f"limelight: up in {server.start_seconds:.0f} s; warm-up sessions, memories")
        stack, setup = e2e_limelight.prepare(server, workload)
        _progress(f"limelight: memories formed in {setup['memory_seconds']:.0f} s; measuring")
        results = asyncio.run(run_users(stack, workload))
        setup["stats"] = e2e_limelight.read_stats(server)
    return results, setup


def _run_assembled(setup: dict[str, Any], workload: Workload, num_threads: int) -> list[TurnResult]:
    _progress("assembled: starting llama_cpp.server, retrieval and speech services")
    with e2e_assembled.assembled_services(gguf_path(), num_threads) as services:
        e2e_assembled.fill_memories(services, setup["memories"])
        stack = e2e_assembled.build_stack(services, setup["slug"], setup["card"], workload)
        warmup = UserScript(e2e_limelight.WARMUP_USER, (), (e2e_limelight.WARMUP_MESSAGE,))
        asyncio.run(_one_turn(stack, warmup))
        _progress("assembled: measuring")
        return asyncio.run(run_users(stack, workload))


async def _one_turn(stack: Stack, user: UserScript) -> TurnResult:
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
        return await stack.turn(client, user, 0, user.messages[0])


def gguf_path() -> Path:
    from limelight.engine.loader import open_checkpoint

    return open_checkpoint(MODEL).source


def _settings(workload: Workload, setup: dict[str, Any], num_threads: int) -> dict[str, Any]:
    from limelight.characters import parse_card
    from limelight.chat.persona import persona
    from limelight.engine.loader import open_checkpoint

    definition = persona(setup["slug"], parse_card(setup["card"]).card).definition
    tokenizer = open_checkpoint(MODEL).tokenizer
    num_tokens = len(tokenizer.encode(definition, add_special_tokens=False))
    assert num_tokens >= MIN_DEFINITION_TOKENS, f"the character is only {num_tokens} tokens"
    stats = setup["stats"]
    return {
        **workload.to_dict(),
        "model": MODEL,
        "gguf": str(gguf_path()),
        "limelight_server": "limelight serve, default settings (memory facts and voice on)",
        "assembled_llm_server": (
            f"python -m llama_cpp.server --n_threads {num_threads} --n_threads_batch "
            f"{num_threads} --n_ctx {e2e_assembled.N_CTX} --interrupt_requests false"
        ),
        "tts_threads": TTS_THREADS,  # per synthesis, both stacks
        "llama_threads": num_threads,
        "definition_tokens": num_tokens,
        "memories_per_user": {u: len(m) for u, m in setup["memories"].items()},
        "memory_formation_s": setup["memory_seconds"],
        "prefix_cache_hit_rate": stats.get("prefix_cache_hit_rate"),
        # memory jobs of the measured turns still queued at the end: background work that
        # shared the engine with the replies
        "memory_jobs_pending_after": stats.get("memory_jobs_pending"),
        "warm": "one throwaway turn on each stack before measuring",
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarize(results: Sequence[TurnResult]) -> dict[str, Any]:
    """The four figures and what explains them, from one stack's turns."""
    ttft = [r.ttft_ms for r in results if r.ttft_ms is not None]
    audio = [r.first_audio_ms for r in results if r.first_audio_ms is not None]
    retrieval = [r.retrieval_ms for r in results if r.retrieval_ms is not None]
    speech = [
        (r.speech_text_ms, r.first_audio_ms)  # when its text was in, when its audio came
        for r in results
        if r.speech_text_ms is not None and r.first_audio_ms is not None
    ]
    cached = [r.cached_tokens for r in results if r.cached_tokens is not None]
    prompts = [r.prompt_tokens for r in results if r.prompt_tokens is not None]
    return {
        "ttft_p50_ms": percentile(ttft, 50),
        "ttft_p95_ms": percentile(ttft, 95),
        "first_audio_p50_ms": percentile(audio, 50),
        "first_audio_p95_ms": percentile(audio, 95),
        "reply_p50_ms": percentile([r.reply_ms for r in results], 50),
        "total_p50_ms": percentile([r.total_ms for r in results], 50),
        "retrieval_p50_ms": percentile(retrieval, 50),
        "speech_text_p50_ms": percentile([text for text, _ in speech], 50),
        "speech_wait_p50_ms": percentile([audio - text for text, audio in speech], 50),
        "num_turns": len(results),
        "num_without_text": len(results) - len(ttft),
        "num_without_audio": len(results) - len(audio),
        "mean_completion_tokens": _mean([r.completion_tokens for r in results]),
        "mean_prompt_tokens": _mean(prompts),
        "mean_cached_tokens": _mean(cached),
    }


def build_report(
    ours: Sequence[TurnResult],
    theirs: Sequence[TurnResult] | None,
    settings: dict[str, Any],
    skipped: str | None = None,
) -> dict[str, Any]:
    mine = summarize(ours)
    peer = summarize(theirs) if theirs is not None else None
    report: dict[str, Any] = {key: mine[key] for key in FIGURES}
    for key in FIGURES:
        report[f"assembled_{key}"] = peer[key] if peer else None
    report["ratios"] = {
        key.removesuffix("_ms"): _ratio(mine[key], peer[key] if peer else None) for key in FIGURES
    }
    report["goals"] = _goals(report)
    report["limelight"], report["assembled"] = mine, peer
    report["assembled_skipped"] = skipped
    report["settings"] = settings
    report["turns"] = {
        "limelight": [_turn_row(r) for r in ours],
        "assembled": [_turn_row(r) for r in theirs] if theirs is not None else None,
    }
    return report


def _goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    goals = []
    for key, limit in GOALS_MS.items():
        value, ratio = report[key], report["ratios"][key.removesuffix("_ms")]
        goals.append(_goal(f"{key} <= {limit:g}", value, value is not None and value <= limit))
        is_met = None if ratio is None else ratio <= GOAL_RATIO
        goals.append(_goal(f"{key} <= {GOAL_RATIO:g} x assembled", ratio, is_met))
    return goals


def _goal(name: str, value: float | None, is_met: bool | None) -> dict[str, Any]:
    return {"goal": name, "value": value, "met": is_met if value is not None else None}


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return ours / theirs if ours is not None and theirs else None


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _turn_row(result: TurnResult) -> dict[str, Any]:
    return asdict(result)


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"end to end at the client: {s['num_users']} users x {s['num_turns']} turns, replies "
        f"of <= {s['max_tokens']} tokens with speech; a {s['definition_tokens']}-token "
        f"character; memories per user {sorted(s['memories_per_user'].values())}; "
        f"{s['warm']}"
    )
    print(f"{'figure':32}{'limelight':>11}{'assembled':>11}{'ratio':>8}")
    labels = {"ttft": "time to first token", "first_audio": "time to first audio"}
    for key in FIGURES:
        name, q = key.removesuffix("_ms").rsplit("_", 1)
        label = f"{labels[name]} {q} (ms)"
        ratio = report["ratios"][key.removesuffix("_ms")]
        cells = _cell(report[key]) + _cell(report[f"assembled_{key}"])
        print(f"{label:32}{cells}{'' if ratio is None else f'{ratio:8.2f}'}")
    for goal in report["goals"]:
        met = {True: "met", False: "NOT met", None: "not measured"}[goal["met"]]
        print(f"goal {goal['goal']:40} {met}")
    _print_details(report)


def _print_details(report: dict[str, Any]) -> None:
    s, ours, peer = report["settings"], report["limelight"], report["assembled"]
    print(
        f"limelight: the first spoken piece's text was in at p50 "
        f"{_ms(ours['speech_text_p50_ms'])}, its audio {_ms(ours['speech_wait_p50_ms'])} later "
        f"(p50); whole reply p50 {_ms(ours['reply_p50_ms'])}, "
        f"{ours['mean_completion_tokens']:.0f} tokens on average; prompt "
        f"{ours['mean_prompt_tokens'] or 0:.0f} tokens, {ours['mean_cached_tokens'] or 0:.0f} "
        f"from the prefix cache (server-wide hit rate {s['prefix_cache_hit_rate']:.0%})"
    )
    print(
        f"limelight's memory worker: {s['memory_formation_s']:.0f} s to form the warm-up "
        f"memories; {s['memory_jobs_pending_after']} jobs of the measured turns still queued "
        "at the end (they share the engine with the replies)"
    )
    if peer is None:
        print(f"assembled stack not measured: {report['assembled_skipped']}")
    else:
        print(
            f"assembled: retrieval p50 {_ms(peer['retrieval_p50_ms'])}; whole reply p50 "
            f"{_ms(peer['speech_text_p50_ms'])} ({peer['mean_completion_tokens']:.0f} tokens on "
            f"average); its audio {_ms(peer['speech_wait_p50_ms'])} later (p50)"
        )
    print(
        f"machine: {os.cpu_count()} cores, 1-minute load average {s['load_average_before']:.2f} "
        f"before and {s['load_average_after']:.2f} after; other processes took "
        f"{s['competing_cpu_share']:.0%} of the cores' time during the run"
    )


def _cell(value: float | None) -> str:
    return f"{'-':>11}" if value is None else f"{value:11.0f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _progress(message: str) -> None:
    print(f"[e2e] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

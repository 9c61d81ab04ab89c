"""bench/engine.py: its report's shape, its limelight side end to end, and the prompts.

No timing is asserted anywhere: figures must exist and be positive, ratios must be
limelight ÷ llama.cpp.  The llama.cpp side needs the bench extra and a built llama-server,
so only its tokenizer is checked here, and only where llama-cpp-python is installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench.engine import build_report, main
from bench.engine_workload import FIGURES, Prompts, Workload
from bench.machine import MachineLimits

RATIO_KEYS = {
    "decode",
    "prefill",
    "concurrent_throughput",
    "shared_prefix_ttft",
    "peak_rss",
    "cpu_seconds_per_mtok",
}


def fake_result(scale: float) -> dict[str, float | str]:
    figures: dict[str, float | str] = {f.key: scale * (i + 1) for i, f in enumerate(FIGURES)}
    return {**figures, "weight_bytes": 1e8, "prompt_fingerprint": "abc"}


def test_ratios_are_limelight_over_llama_cpp(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"\0" * 1000)
    machine = MachineLimits(10.0, 8.0, 100.0, 256, 2)
    results = {"limelight": fake_result(3.0), "llama.cpp": fake_result(2.0)}
    report = build_report("m", gguf, Workload.quick(), machine, results)
    assert set(report["ratios"]) == RATIO_KEYS
    assert all(r == pytest.approx(1.5) for r in report["ratios"].values())
    assert report["same_prompts"] is True
    bound = report["bandwidth_bound"]["limelight"]
    assert bound["bound_tok_s"] == pytest.approx(10e9 / 1e8)
    json.dumps(report)  # all of it is JSON


def test_prompts_have_the_workload_sizes() -> None:
    workload = Workload.quick()
    prompts = Prompts.build(lambda text: [ord(c) for c in text], workload)
    assert len(prompts.streams) == workload.num_streams == len(set(map(tuple, prompts.streams)))
    assert all(len(p) == workload.num_prefill_tokens for p in prompts.prefill)
    prefix = prompts.shared[0][: workload.num_prefill_tokens]
    assert all(p[: workload.num_prefill_tokens] == prefix for p in prompts.shared)
    assert len({tuple(p) for p in prompts.shared}) == len(prompts.shared)


def test_cli_runs_the_benchmark() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "limelight", "bench", "engine", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--json" in result.stdout and "--quick" in result.stdout


@pytest.mark.slow
def test_limelight_side_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quick", "--json", "--engines", "limelight"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    figures = report["limelight"]
    assert {f.key for f in FIGURES} <= set(figures)
    assert all(figures[f.key] > 0 for f in FIGURES)
    assert figures["shared_prefix_cached_tokens"] > 0  # the second conversation hit the cache
    assert report["machine"]["bandwidth_gb_s"] > 0 and report["machine"]["matmul_gflop_s"] > 0
    assert report["bandwidth_bound"]["limelight"]["bound_tok_s"] > 0
    assert "ratios" not in report  # one engine: nothing to divide by


@pytest.mark.slow
def test_llama_cpp_tokenizes_the_prompts_like_limelight() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from limelight.engine.loader import open_checkpoint

    checkpoint = open_checkpoint("smollm2-135m-instruct")
    vocab = llama_cpp.Llama(model_path=str(checkpoint.source), vocab_only=True, verbose=False)
    workload = Workload()  # the full one: every prompt of the real run
    ours = Prompts.build(
        lambda text: checkpoint.tokenizer.encode(text, add_special_tokens=False), workload
    )
    theirs = Prompts.build(lambda text: vocab.tokenize(text.encode(), add_bos=False), workload)
    assert ours == theirs

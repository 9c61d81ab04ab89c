"""limelight against llama.cpp on one GGUF, side by side, in one run.

`python bench/engine.py [--json] [--quick]` (or `limelight bench engine ...`) measures the
machine's limits, then each engine in its own process on the same GGUF, thread count and
token ids (bench/engine_workload.py): single-stream decode, prefill, the aggregate decode
rate of concurrent streams, time to first token after a shared character prefix, and the
peak RSS and CPU-seconds per million tokens of the concurrent run.  It prints each figure
for both with the ratio limelight ÷ llama.cpp, and how close single-stream decode comes to
the memory-bandwidth bound.  With `--json` the last line is one JSON object of everything.
The peer is llama.cpp at its best: see bench/engine_llamacpp.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import engine_llamacpp
from bench.engine_workload import FIGURES, PRECISIONS, Workload, run_worker
from bench.machine import MachineLimits, measure_machine
from bench.meter import CompetingLoad

ENGINES = ("limelight", "llama.cpp")
DEFAULT_MODEL = "smollm2-135m-instruct"
MB = 1e6


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    workload = Workload.quick() if args.quick else Workload()
    gguf = _gguf_path(args.model)
    competing = CompetingLoad()
    competing.start()
    machine = measure_machine(workload.num_threads, quick=args.quick)
    results: dict[str, dict[str, Any]] = {}
    if "limelight" in args.engines:
        worker_args = ["--model", args.model, "--workload", workload.to_json()]
        worker_args += ["--precision", args.precision]
        results["limelight"] = run_worker("bench.engine_limelight", worker_args)
    if "llama.cpp" in args.engines:
        results["llama.cpp"] = engine_llamacpp.measure(gguf, workload)
    report = build_report(args.model, gguf, workload, machine, results)
    report["competing_cpu_share"] = competing.stop()  # other processes' share of the CPU
    print_report(report)
    if args.json:
        print(json.dumps(report))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="limelight bench engine", description="limelight vs llama.cpp on the same GGUF."
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    parser.add_argument("--quick", action="store_true", help="a small workload (smoke test)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="packaged name or .gguf file")
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="int4",
        help="limelight's weights: int4 or int8 (+bfloat16 for batches), bfloat16 or float32",
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=ENGINES,
        default=list(ENGINES),
        help="measure only these (ratios need both)",
    )
    return parser


def _gguf_path(model: str) -> Path:
    from limelight.engine.loader import open_checkpoint

    source = open_checkpoint(model).source
    if source.suffix != ".gguf":
        raise SystemExit(f"bench engine: {model!r} is not a GGUF; llama.cpp needs one")
    return source


def build_report(
    model: str,
    gguf: Path,
    workload: Workload,
    machine: MachineLimits,
    results: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "model": model,
        "gguf": str(gguf),
        "workload": asdict(workload),
        "machine": machine.to_dict(),
        **results,
        "bandwidth_bound": _bandwidth_bound(machine, gguf, results),
    }
    if len(results) == len(ENGINES):
        ours, peer = results["limelight"], results["llama.cpp"]
        report["ratios"] = {f.key: ours[f.key] / peer[f.key] for f in FIGURES}
        report["same_prompts"] = ours["prompt_fingerprint"] == peer["prompt_fingerprint"]
    return report


def _bandwidth_bound(
    machine: MachineLimits, gguf: Path, results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Decode can go no faster than bandwidth ÷ the bytes of weights read per token."""
    bandwidth = machine.bandwidth_gb_s * 1e9
    gguf_bytes = gguf.stat().st_size
    bound: dict[str, Any] = {"gguf_bytes": gguf_bytes, "gguf_tok_s": bandwidth / gguf_bytes}
    for name, result in results.items():
        weight_bytes = result["weight_bytes"]
        bound[name] = {
            "weight_bytes": weight_bytes,
            "bound_tok_s": bandwidth / weight_bytes,
            "decode_fraction_of_bound": result["decode"] * weight_bytes / bandwidth,
            "decode_fraction_of_gguf_bound": result["decode"] * gguf_bytes / bandwidth,
        }
    return bound


def print_report(report: dict[str, Any]) -> None:
    workload, machine = report["workload"], report["machine"]
    competing = report["competing_cpu_share"]
    names = [n for n in ENGINES if n in report]
    print(
        f"{' vs '.join(names)} on {Path(report['gguf']).name}, "
        f"{workload['num_threads']} threads, the same token ids"
        + ("" if report.get("same_prompts", True) else " NOT (tokenizers disagree!)")
    )
    print(f"{'figure':44}{'unit':>7}" + "".join(f"{n:>12}" for n in names) + "       ratio")
    for figure in FIGURES:
        label = figure.label.format(**workload)
        cells = "".join(f"{_format(report[n][figure.key]):>12}" for n in names)
        ratio = report.get("ratios", {}).get(figure.key)
        better = "higher" if figure.is_higher_better else "lower"
        tail = f"{ratio:12.2f}  ({better} is better)" if ratio is not None else ""
        print(f"{label:44}{figure.unit:>7}{cells}{tail}")
    if "flash_attention" in report.get("llama.cpp", {}):
        chosen = report["llama.cpp"]["flash_attention"]
        print(
            f"llama-server ran with -fa auto and -fa off; kept -fa {chosen['concurrent']} for "
            f"{workload['num_streams']} streams, -fa {chosen['shared_prefix_ttft']} for TTFT "
            "(the faster of each)"
        )
    print(
        f"machine: read {machine['read_gb_s']:.1f} GB/s, copy {machine['copy_gb_s']:.1f} GB/s, "
        f"fp32 matmul {machine['matmul_size']}² {machine['matmul_gflop_s']:.1f} GFLOP/s "
        f"on {machine['num_threads']} threads; other processes took {competing:.0%} of "
        f"the {os.cpu_count()} cores' time during the run"
    )
    if competing > 0.05:
        print(
            "warning: other processes ran on these cores during the run; every figure is "
            "lower than on an idle machine, and not by the same factor for both engines"
        )
    _print_bandwidth_bound(report)


def _print_bandwidth_bound(report: dict[str, Any]) -> None:
    machine, bound = report["machine"], report["bandwidth_bound"]
    print(
        f"decode bound = {machine['bandwidth_gb_s']:.1f} GB/s ÷ weight bytes read per token "
        f"(GGUF, {bound['gguf_bytes'] / MB:.0f} MB: {bound['gguf_tok_s']:.0f} tok/s)"
    )
    for name in (n for n in ENGINES if n in report):
        b = bound[name]
        print(
            f"  {name:10} {b['weight_bytes'] / MB:6.0f} MB of weights → bound "
            f"{b['bound_tok_s']:6.1f} tok/s; decode {report[name]['decode']:.1f} tok/s = "
            f"{b['decode_fraction_of_bound']:.0%} of it ({b['decode_fraction_of_gguf_bound']:.0%} "
            "of the GGUF bound)"
        )


def _format(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())

"""llama.cpp's side of bench/engine.py: the peer at its best, as a user would run it.

Single-stream figures: llama-cpp-python (`Llama`, the bench extra) in its own process,
`python -m bench.engine_llamacpp --model GGUF --workload JSON`, which also tokenizes every
prompt with llama.cpp's tokenizer and prints one JSON object.  Concurrent figures:
llama.cpp's own `llama-server` (built by build_llama_server.sh from the same vendored
llama.cpp) with one slot per stream and continuous batching, driven over loopback HTTP by
one thread per stream; `llama_cpp.server` would answer one request at a time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.engine_workload import Prompts, Workload, progress, run_worker
from bench.meter import ProcessMeter

BENCH = Path(__file__).resolve().parent
SERVER_START_TIMEOUT_S = 180
FLASH_ATTENTION = ("auto", "off")  # llama-server's settings tried for its figures


def measure(gguf: Path, workload: Workload) -> dict[str, Any]:
    """Every figure: the single-stream worker first, then the server (never both at once).

    The server runs once with each of its flash-attention settings (`-fa`) and each figure
    keeps the better one.  On an Intel Xeon here its default (`auto`: on) gave 214 against
    196 tok/s over 16 streams, but a new turn after a cached 1,000-token prefix took 240
    against 75 ms (llama.cpp's own `prompt_ms`: 238 against 73)."""
    single = _run_single_stream_worker(gguf, workload)
    streams, shared = single.pop("stream_prompts"), single.pop("shared_prompts")
    runs = []
    for flash_attention in FLASH_ATTENTION:
        with LlamaServer(_server_binary(), gguf, workload, flash_attention) as server:
            progress("llama.cpp", f"{workload.num_streams} concurrent streams (llama-server, "
                     f"-fa {flash_attention})")  # fmt: skip
            concurrent = server.concurrent(streams, workload.num_new_tokens)
            progress("llama.cpp", f"shared-prefix TTFT (llama-server, -fa {flash_attention})")
            ttft, cached = server.shared_prefix_ttft(shared)
        runs.append((flash_attention, concurrent, ttft, cached))
    fastest = max(runs, key=lambda run: run[1]["concurrent_throughput"])
    quickest = min(runs, key=lambda run: run[2])
    return {
        **single,
        **fastest[1],
        "shared_prefix_ttft": quickest[2],
        "shared_prefix_cached_tokens": quickest[3],
        "flash_attention": {"concurrent": fastest[0], "shared_prefix_ttft": quickest[0]},
        "weight_bytes": gguf.stat().st_size,
    }


# --- llama-cpp-python, in the worker process ---------------------------------------------


def measure_single_stream(gguf: Path, workload: Workload) -> dict[str, Any]:
    from llama_cpp import Llama

    n_ctx = workload.num_prefill_tokens + workload.num_new_tokens + 256
    llm = Llama(
        model_path=str(gguf),
        n_threads=workload.num_threads,
        n_threads_batch=workload.num_threads,
        n_ctx=n_ctx,
        verbose=False,
    )
    prompts = Prompts.build(lambda text: llm.tokenize(text.encode(), add_bos=False), workload)
    _decode_rate(llm, prompts.streams[0], 4)  # warm-up
    progress("llama.cpp", "single-stream decode (llama-cpp-python)")
    decode = statistics.median(
        _decode_rate(llm, prompts.decode, workload.num_new_tokens)
        for _ in range(workload.num_repeats)
    )
    progress("llama.cpp", "prefill (llama-cpp-python)")
    prefill = statistics.median(_prefill_rate(llm, ids) for ids in prompts.prefill)
    return {
        "decode": decode,
        "prefill": prefill,
        "prompt_fingerprint": prompts.fingerprint,
        "stream_prompts": prompts.streams,
        "shared_prompts": prompts.shared,
    }


def _decode_rate(llm: Any, prompt: list[int], num_tokens: int) -> float:
    """Tokens per second after the first one; `generate` never stops at EOS by itself."""
    llm.reset()
    stamps: list[float] = []
    for _ in llm.generate(prompt, temp=0.0):  # greedy
        stamps.append(time.perf_counter())
        if len(stamps) == num_tokens:
            break
    return (num_tokens - 1) / (stamps[-1] - stamps[0]) if num_tokens > 1 else 0.0


def _prefill_rate(llm: Any, prompt: list[int]) -> float:
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    return len(prompt) / (time.perf_counter() - start)


def _run_single_stream_worker(gguf: Path, workload: Workload) -> dict[str, Any]:
    # OpenMP threads spin between calls instead of sleeping: llama.cpp at its best when
    # Python calls it token by token.
    env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    args = ["--model", str(gguf), "--workload", workload.to_json()]
    return run_worker("bench.engine_llamacpp", args, env)


# --- llama-server, driven from this process ----------------------------------------------


def _server_binary() -> Path:
    script = BENCH / "build_llama_server.sh"
    result = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{script} failed (exit code {result.returncode}); see above")
    return Path(result.stdout.strip().splitlines()[-1])


class LlamaServer:
    """`llama-server` on a free loopback port with one slot per stream.

    Each slot holds the longest request (the shared prefix, a turn, the new tokens);
    llama.cpp allocates and clears that whole KV cache at start, so it is resident for
    the peak-RSS figure, as it is for any user of these options.
    """

    def __init__(
        self, binary: Path, gguf: Path, workload: Workload, flash_attention: str = "auto"
    ) -> None:
        slot_ctx = workload.num_prefill_tokens + workload.num_new_tokens + 256
        self.port = _free_port()
        self.command = [
            str(binary), "-m", str(gguf),
            "-t", str(workload.num_threads), "-tb", str(workload.num_threads),
            "-np", str(workload.num_streams), "-c", str(workload.num_streams * slot_ctx),
            "--cont-batching", "--no-webui", "--host", "127.0.0.1", "--port", str(self.port),
            "--flash-attn", flash_attention,
        ]  # fmt: skip
        self.log_path = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LlamaServer:
        with self.log_path.open("wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not self._is_healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama-server did not start; its log: {self.log_path}")
            time.sleep(0.25)
        list(self._stream([1, 2, 3], 4))  # warm-up
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=30)
        if exc_type is None:  # a failed run keeps the log to read
            self.log_path.unlink(missing_ok=True)

    def concurrent(self, prompts: list[list[int]], num_tokens: int) -> dict[str, float]:
        """All streams at once: aggregate tokens/s, and the server's peak RSS and CPU."""
        assert self.process is not None
        meter = ProcessMeter(self.process.pid)
        meter.start()
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
            finals = list(pool.map(lambda p: list(self._stream(p, num_tokens))[-1], prompts))
        elapsed = time.perf_counter() - start
        usage = meter.stop()
        num_generated = sum(int(final["tokens_predicted"]) for final in finals)
        assert num_generated == len(prompts) * num_tokens, num_generated
        return {
            "concurrent_throughput": num_generated / elapsed,
            "peak_rss": usage.peak_rss_mib,
            "cpu_seconds_per_mtok": usage.cpu_seconds / num_generated * 1e6,
            "concurrent_cpu_seconds": usage.cpu_seconds,
        }

    def shared_prefix_ttft(self, prompts: list[list[int]]) -> tuple[float, int]:
        """Median time to first token of new conversations after one used the same prefix."""
        first, *others = prompts
        list(self._stream(first, 16))  # the conversation that came before
        ttfts, cached = [], []
        for prompt in others:
            start = time.perf_counter()
            events = self._stream(prompt, 1)
            head = next(events)
            ttfts.append(time.perf_counter() - start)
            final = [head, *events][-1]
            cached.append(int(final["timings"]["cache_n"]))
        return statistics.median(ttfts), min(cached)

    def _stream(self, prompt: list[int], num_tokens: int) -> Iterator[dict[str, Any]]:
        """POST /completion, streamed: one event per token, then the final one."""
        body = {
            "prompt": prompt,
            "n_predict": num_tokens,
            "temperature": 0,
            "top_k": 1,
            "ignore_eos": True,
            "cache_prompt": True,
            "stream": True,
        }
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            headers = {"Content-Type": "application/json"}
            conn.request("POST", "/completion", json.dumps(body), headers)
            response = conn.getresponse()
            if response.status != 200:
                raise RuntimeError(f"llama-server answered {response.status}: {response.read()!r}")
            for line in response:
                payload = line.removeprefix(b"data: ").strip()
                if payload != line.strip() and payload != b"[DONE]":
                    yield json.loads(payload)
        finally:
            conn.close()

    def _is_healthy(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a .gguf file")
    parser.add_argument("--workload", required=True, help="a Workload as JSON")
    args = parser.parse_args(argv)
    result = measure_single_stream(Path(args.model), Workload.from_json(args.workload))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

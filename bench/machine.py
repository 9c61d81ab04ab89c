"""The machine's limits, measured in the same run as the engines they bound.

Memory bandwidth (reading a tensor much larger than the caches, and copying one) and fp32
matmul throughput, with PyTorch on the benchmark's thread count.  Decode of a small model
is bound by bandwidth: each new token reads every weight once, so
`bandwidth / weight bytes` is the fastest single-stream decode can go.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

GB = 1e9


@dataclass(frozen=True, slots=True)
class MachineLimits:
    read_gb_s: float  # reading a large fp32 tensor (a sum)
    copy_gb_s: float  # bytes read + bytes written by a large copy
    matmul_gflop_s: float  # fp32 [n, n] @ [n, n]
    matmul_size: int
    num_threads: int

    @property
    def bandwidth_gb_s(self) -> float:
        """The bound used for decode: the better of the two ways of streaming memory."""
        return max(self.read_gb_s, self.copy_gb_s)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bandwidth_gb_s": self.bandwidth_gb_s}


def measure_machine(num_threads: int, quick: bool = False) -> MachineLimits:
    torch.set_num_threads(num_threads)
    num_bytes = (128 if quick else 512) << 20
    size = 1024 if quick else 2048
    return MachineLimits(
        read_gb_s=_read_bandwidth(num_bytes),
        copy_gb_s=_copy_bandwidth(num_bytes),
        matmul_gflop_s=_matmul_gflops(size),
        matmul_size=size,
        num_threads=num_threads,
    )


def _best_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()  # first touch and warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _read_bandwidth(num_bytes: int) -> float:
    x = torch.ones(num_bytes // 4, dtype=torch.float32)
    return num_bytes / _best_seconds(x.sum) / GB


def _copy_bandwidth(num_bytes: int) -> float:
    src = torch.ones(num_bytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    return 2 * num_bytes / _best_seconds(lambda: dst.copy_(src)) / GB


def _matmul_gflops(n: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / _best_seconds(lambda: a @ b) / GB

"""Peak resident memory and CPU time of one process over a stretch of work.

`ProcessMeter(pid)` resets the kernel's peak-RSS mark of that process (`clear_refs` 5,
Linux) when started, and reads it (`VmHWM`) and the process's CPU seconds (all threads,
user + system, via psutil) when stopped.  Where the mark cannot be reset it samples RSS
every 20 ms instead.  Used on limelight's worker by itself and on `llama-server`.
`CompetingLoad` measures how much of the machine other processes took meanwhile.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Usage:
    peak_rss_mib: float
    cpu_seconds: float


class ProcessMeter:
    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self._cpu_start = 0.0
        self._sampled_peak = 0
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        if not _reset_peak_rss(self.process.pid):
            self._sampled_peak = self.process.memory_info().rss
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        self._cpu_start = _cpu_seconds(self.process)

    def stop(self) -> Usage:
        cpu = _cpu_seconds(self.process) - self._cpu_start
        if self._sampler is None:
            peak = _peak_rss(self.process.pid)
        else:
            self._stop.set()
            self._sampler.join()
            peak = self._sampled_peak
        return Usage(peak / MIB, cpu)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._sampled_peak = max(self._sampled_peak, self.process.memory_info().rss)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _reset_peak_rss(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


class CompetingLoad:
    """The share of the machine's CPU time that processes other than this one and its
    (waited-for) children used over a stretch: what the benchmark had to share."""

    def __init__(self) -> None:
        self._start = (0.0, 0.0, 0.0)

    def start(self) -> None:
        self._start = (time.monotonic(), _machine_busy_seconds(), _own_seconds())

    def stop(self) -> float:
        now = (time.monotonic(), _machine_busy_seconds(), _own_seconds())
        wall, busy, own = (a - b for a, b in zip(now, self._start, strict=True))
        return max(busy - own, 0.0) / (wall * (os.cpu_count() or 1))


def _machine_busy_seconds() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
                 + getattr(t, "steal", 0.0))  # fmt: skip


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system

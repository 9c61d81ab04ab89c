"""A server process of bench/e2e.py: started on a free port, waited for, always stopped.

`Service` runs one command with its output in a log file, polls a health URL until it
answers 200 (or the process dies, or the start-up timeout passes), and on exit stops it:
SIGTERM, then SIGKILL if it has not exited within a few seconds.  A service that failed
keeps its log and names it in the error; otherwise the log is deleted.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 15.0


class ServiceError(RuntimeError):
    """A service did not start or answered with an error; the message says which."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def python_module(module: str, *args: str) -> list[str]:
    """The command that runs `module` with this interpreter (the venv's)."""
    return [sys.executable, "-m", module, *args]


class Service:
    def __init__(
        self,
        name: str,
        command: Sequence[str],
        port: int,
        health_path: str = "/health",
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.name, self.command, self.port = name, list(command), port
        self.url = f"http://127.0.0.1:{port}"
        self.health_url = self.url + health_path
        self.env = {**os.environ, **(env or {})}
        self.start_timeout_s = start_timeout_s
        handle, log_path = tempfile.mkstemp(prefix=f"e2e-{name.replace(' ', '-')}-", suffix=".log")
        os.close(handle)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0  # how long it took to answer its health check

    def __enter__(self) -> Service:
        start = time.monotonic()
        with self.log_path.open("wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        try:
            self._wait_healthy(start)
        except BaseException:
            self._stop()
            raise
        self.start_seconds = time.monotonic() - start
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self._stop()
        if exc_type is None:  # a failed run keeps the log to read
            self.log_path.unlink(missing_ok=True)

    @property
    def pid(self) -> int:
        assert self.process is not None, "the service is not running"
        return self.process.pid

    def fail(self, why: str) -> ServiceError:
        return ServiceError(f"{self.name}: {why}; its log: {self.log_path}")

    def _wait_healthy(self, start: float) -> None:
        assert self.process is not None
        while not _answers(self.health_url):
            if self.process.poll() is not None:
                raise self.fail(f"exited with code {self.process.returncode} while starting")
            if time.monotonic() - start > self.start_timeout_s:
                raise self.fail(f"not healthy after {self.start_timeout_s:.0f} s")
            time.sleep(0.25)

    def _stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False

"""A real limelight server for the API tests: uvicorn on a free port, a fresh SQLite file,
the packaged SmolLM2 model.  One server per test module (loading the model takes seconds).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from limelight.server.app import create_app
from limelight.server.settings import Settings

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass
class Server:
    url: str
    settings: Settings
    thread: threading.Thread
    uvicorn: uvicorn.Server

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=300, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(database: Path, **overrides: object) -> Server:
    # eager decode: compiling takes ~15 s a start; tests/engine/test_compiled.py and the
    # e2e benchmark's test (a real `limelight serve`) cover the compiled path
    overrides.setdefault("compile", False)
    settings = Settings(
        database_url=f"sqlite:///{database}",
        port=free_port(),
        kv_cache_bytes=64 << 20,
        max_model_len=2048,
        **overrides,  # type: ignore[arg-type]
    )
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    return Server(f"http://127.0.0.1:{settings.port}", settings, thread, server)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("server") / "limelight.db")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def server_no_memory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without long-term memory, for tests of everything else."""
    running = start_server(tmp_path_factory.mktemp("server") / "limelight.db", memory=False)
    yield running
    running.stop()

"""A throwaway PostgreSQL server for the store's tests.

`LIMELIGHT_TEST_POSTGRES_URL` names a server to use; otherwise, where Debian's PostgreSQL
binaries are installed (as `.ci/run` installs them), a fresh cluster is made in a temporary
folder and started on a free loopback port for the session.  Elsewhere the tests that need
it are skipped, saying why.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(*command: str) -> list[str]:
    """Run as the `postgres` account when we are root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_url() -> Iterator[str | None]:
    """A database URL, or None with the reason printed when no server can be had."""
    if url := os.environ.get("LIMELIGHT_TEST_POSTGRES_URL"):
        yield url
        return
    bindir = _binaries()
    if bindir is None:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="limelight-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", _free_port()
    run = lambda *c: subprocess.run(_as_postgres(*c), check=True, capture_output=True)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "limelight", "--auth=trust")
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(folder / "server.log")  # the server must not hold our pipes open
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", log, "-w", "start")
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "limelight", "t")
        yield f"postgresql+psycopg://limelight@127.0.0.1:{port}/t"
    finally:
        subprocess.run(
            _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"),
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)

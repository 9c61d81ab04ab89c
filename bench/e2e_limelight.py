"""limelight's side of bench/e2e.py: the real server, talked to as the web app talks to it.

`limelight serve` runs in its own process on a fresh database, with the packaged model and
default settings.  Set-up (never timed): the benchmark character is created through the
API; each user has an earlier session of warm-up turns, and the memory worker's jobs are
waited for until every user has stored memories; each user then opens a new session, and
one throwaway turn by another user warms the character's prefix and the voice, as on a
server that has been running.  A measured turn is `POST /api/sessions/{id}/messages` with
`"speak": true`, read as Server-Sent Events: `delta` (text), `audio` (a synthesised
sentence), then `done` with the usage.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.e2e_client import REQUEST_TIMEOUT_S, TurnResult, check_status, sse_events
from bench.e2e_process import Service, ServiceError, free_port, python_module
from bench.e2e_workload import CHARACTER, UserScript, Workload
from limelight.voice import speakable

MEMORY_TIMEOUT_S = 300.0
WARMUP_USER = "warmup"
WARMUP_MESSAGE = "Hello! What's good today?"
WARMUP_MAX_TOKENS = 32  # the warm-up replies are not measured; the user's words make memories


@contextmanager
def limelight_server(folder: Path) -> Iterator[Service]:
    port = free_port()
    database = f"sqlite:///{folder / 'limelight.db'}"
    command = python_module("limelight", "serve", "--port", str(port), "--database", database)
    with Service("limelight serve", command, port, health_path="/api/stats") as service:
        yield service


class LimelightStack:
    """The measured sessions of one prepared server (see `prepare`)."""

    def __init__(self, url: str, slug: str, sessions: dict[str, str], max_tokens: int) -> None:
        self.url, self.slug, self.sessions, self.max_tokens = url, slug, sessions, max_tokens

    async def turn(
        self, client: httpx.AsyncClient, user: UserScript, turn: int, message: str
    ) -> TurnResult:
        url = f"{self.url}/api/sessions/{self.sessions[user.name]}/messages"
        body = {"content": message, "speak": True, "max_tokens": self.max_tokens}
        deltas: list[tuple[float, str]] = []  # (ms, text) as they came
        first_audio: tuple[float, str] | None = None  # (ms, the piece spoken)
        num_audio, usage, reply_ms = 0, {}, None
        start = time.perf_counter()
        async with client.stream("POST", url, params={"user": user.name}, json=body) as response:
            await check_status(response, "limelight")
            async for event, data in sse_events(response):
                now = (time.perf_counter() - start) * 1e3
                if event == "delta":
                    deltas.append((now, json.loads(data)["text"]))
                elif event == "audio":
                    num_audio += 1
                    first_audio = first_audio or (now, json.loads(data)["text"])
                elif event == "done":
                    usage, reply_ms = json.loads(data)["usage"], now
                elif event == "error":
                    raise RuntimeError(f"limelight's reply failed: {data}")
        total_ms = (time.perf_counter() - start) * 1e3
        reply = "".join(text for _, text in deltas).strip()
        return TurnResult(
            user=user.name,
            turn=turn,
            ttft_ms=next((ms for ms, text in deltas if text), None),
            first_audio_ms=first_audio[0] if first_audio else None,
            reply_ms=total_ms if reply_ms is None else reply_ms,
            total_ms=total_ms,
            num_audio=num_audio,
            completion_tokens=int(usage.get("completion_tokens", 0)),
            reply=reply,
            prompt_tokens=usage.get("prompt_tokens"),
            cached_tokens=usage.get("cached_tokens"),
            speech_text_ms=_piece_complete_ms(deltas, first_audio[1]) if first_audio else None,
        )


def _piece_complete_ms(deltas: list[tuple[float, str]], piece: str) -> float | None:
    """When the client had received all the words of the first spoken piece: the rest of
    the time to first audio is the server's (a sentence end confirmed, synthesis, encoding)."""
    num_words, text = len(piece.split()), ""
    for ms, delta in deltas:
        text += delta
        if len(speakable(text).split()) >= num_words:
            return ms
    return None


def prepare(service: Service, workload: Workload) -> tuple[LimelightStack, dict[str, Any]]:
    """The character, each user's memories and measured session, and a warm server.

    The throwaway turn comes before the wait for the memory worker, so that no memory
    job of set-up is left to run during the measured turns (theirs do, as on any server).
    Returns the stack and what set-up found: the character's card, each user's memory
    texts (the assembled stack's retrieval service gets the same) and the time taken."""
    with httpx.Client(base_url=service.url, timeout=REQUEST_TIMEOUT_S) as client:
        character = _checked(client.post("/api/characters", json=CHARACTER), "create character")
        slug = character["slug"]
        start = time.monotonic()
        asyncio.run(_warmup_sessions(service.url, slug, workload))
        _throwaway_turn(client, slug)
        memories = _wait_for_memories(client, slug, workload)
        memory_seconds = time.monotonic() - start
        sessions = {u.name: _new_session(client, slug, u.name) for u in workload.users}
    card, seconds = character["card"], memory_seconds
    setup = {"slug": slug, "card": card, "memories": memories, "memory_seconds": seconds}
    return LimelightStack(service.url, slug, sessions, workload.max_tokens), setup


def _throwaway_turn(client: httpx.Client, slug: str) -> None:
    """Another user's spoken turn: the character's prefix cached and speech warm."""
    session = _new_session(client, slug, WARMUP_USER)
    body = {"content": WARMUP_MESSAGE, "speak": True, "stream": False}
    response = client.post(
        f"/api/sessions/{session}/messages", params={"user": WARMUP_USER}, json=body
    )
    _checked(response, "warm-up turn")


def read_stats(service: Service) -> dict[str, Any]:
    return _checked(httpx.get(service.url + "/api/stats", timeout=30), "stats")


async def _warmup_sessions(url: str, slug: str, workload: Workload) -> None:
    """Each user's earlier session: the facts the memory worker turns into memories."""
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:

        async def one_user(user: UserScript) -> None:
            body = {"character": slug, "user": user.name}
            response = await client.post("/api/sessions", json=body)
            session = _checked(response, "create session")["id"]
            for message in user.warmup[: workload.num_warmup_turns]:
                reply = {"content": message, "stream": False, "max_tokens": WARMUP_MAX_TOKENS}
                response = await client.post(
                    f"/api/sessions/{session}/messages", params={"user": user.name}, json=reply
                )
                _checked(response, "warm-up message")

        await asyncio.gather(*(one_user(u) for u in workload.users))


def _wait_for_memories(client: httpx.Client, slug: str, workload: Workload) -> dict[str, list[str]]:
    """Wait until the memory worker has no job left and every user has memories."""
    deadline = time.monotonic() + MEMORY_TIMEOUT_S
    while True:
        pending = _checked(client.get("/api/stats"), "stats")["memory_jobs_pending"]
        memories = {
            u.name: [
                m["text"]
                for m in _checked(
                    client.get(f"/api/characters/{slug}/memories", params={"user": u.name}),
                    "memories",
                )
            ]
            for u in workload.users
        }
        if pending == 0 and all(memories.values()):
            return memories
        if time.monotonic() > deadline:
            raise ServiceError(
                f"limelight's memory worker left {pending} jobs pending and formed no memory "
                f"for {[u for u, m in memories.items() if not m]} after {MEMORY_TIMEOUT_S:.0f} s"
            )
        time.sleep(1.0)


def _new_session(client: httpx.Client, slug: str, user: str) -> str:
    response = client.post("/api/sessions", json={"character": slug, "user": user})
    return str(_checked(response, "create session")["id"])


def _checked(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        raise ServiceError(f"limelight: {what} answered {response.status_code}: {response.text}")
    return response.json()

"""The simulated users of bench/e2e.py, and what they measure at the client.

`run_users` drives every user concurrently on one event loop, each turn after its think
time, against a `Stack` (limelight's server, or the assembled stack); a stack's `turn`
returns a `TurnResult` whose times start when the request leaves the client.  `sse_events`
reads a Server-Sent Events stream (limelight's replies and llama.cpp's chunks alike).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import httpx

from bench.e2e_workload import UserScript, Workload

REQUEST_TIMEOUT_S = 300.0


@dataclass(slots=True)
class TurnResult:
    user: str
    turn: int
    ttft_ms: float | None  # request sent → first non-empty text; None: no text came
    first_audio_ms: float | None  # request sent → first audio; None: no audio came
    reply_ms: float  # request sent → the whole reply's text
    total_ms: float  # request sent → the last byte of the turn (audio included)
    num_audio: int  # audio events (limelight) or responses (assembled)
    completion_tokens: int
    prompt_tokens: int | None = None  # as the server counted them, where it says
    cached_tokens: int | None = None  # prompt tokens served from the prefix cache
    retrieval_ms: float | None = None  # the assembled stack's search call
    # the text of the first audio was all at the client: limelight's first spoken piece,
    # the assembled stack's whole reply; first audio minus this is the wait for speech
    speech_text_ms: float | None = None
    reply: str = ""  # what was said (to see why a turn had no audio, say)


class Stack(Protocol):
    async def turn(
        self, client: httpx.AsyncClient, user: UserScript, turn: int, message: str
    ) -> TurnResult: ...


async def run_users(stack: Stack, workload: Workload) -> list[TurnResult]:
    """Every user's measured turns, all users at once; results in completion order."""
    results: list[TurnResult] = []
    limits = httpx.Limits(max_connections=4 * workload.num_users)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:

        async def one_user(index: int, user: UserScript) -> None:
            for turn, pause in enumerate(workload.think_times(index)):
                await asyncio.sleep(pause)
                message = workload.message(user, turn)
                results.append(await stack.turn(client, user, turn, message))

        await asyncio.gather(*(one_user(i, u) for i, u in enumerate(workload.users)))
    return results


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of an SSE stream; comments (`: ping`) are skipped."""
    event = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").removeprefix(" "))
    if data:
        yield event, "\n".join(data)


async def check_status(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        body = await response.aread()
        raise RuntimeError(f"{what} answered {response.status_code}: {body[:500]!r}")

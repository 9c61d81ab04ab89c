"""`speak` with a fake reply and a fake voice: deltas pass straight through, each sentence's
audio follows in reply order (even when a later one is synthesised first), all before done;
each piece is asked for by the time the pieces before it will have played.  And the
synthesis thread's queue, earliest deadline first."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from limelight.chat import Delta, Done, ReplyEvent
from limelight.chat.service import Usage
from limelight.server.speech import CHARACTERS_PER_SECOND, DeadlineExecutor, Spoken, speak
from limelight.voice import DEFAULT_PROFILE, Audio, VoiceProfile


class FakeVoice:
    """Takes longer for shorter text, so the second sentence finishes before the first."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, str, float | None]] = []  # (when, text, deadline)
        self.urgent: list[bool] = []

    async def synthesize(
        self, text: str, profile: VoiceProfile, deadline: float | None = None, urgent: bool = False
    ) -> Audio:
        self.requests.append((time.monotonic(), text, deadline))
        self.urgent.append(urgent)
        await asyncio.sleep(0.2 / len(text))
        return Audio(np.zeros(len(text) * 100, dtype=np.float32), 16_000)


async def reply(pieces: list[str]) -> AsyncIterator[ReplyEvent]:
    for piece in pieces:
        await asyncio.sleep(0.01)
        yield Delta(piece)
    usage = Usage(prompt_tokens=1, completion_tokens=len(pieces), cached_tokens=0)
    yield Done("m1", "u1", "".join(pieces), "stop", usage)


def test_audio_follows_in_order_and_before_done() -> None:
    pieces = ["Hi. ", "That is a much longer sentence than the first. ", "And", " the end."]

    async def collect() -> list[object]:
        spoken = speak(reply(pieces), FakeVoice(), DEFAULT_PROFILE)  # type: ignore[arg-type]
        return [event async for event in spoken]

    events = asyncio.run(collect())
    assert [e.text for e in events if isinstance(e, Delta)] == pieces
    audio = [e for e in events if isinstance(e, Spoken)]
    assert [a.index for a in audio] == [0, 1, 2]
    assert [a.text for a in audio] == [
        "Hi.",
        "That is a much longer sentence than the first.",
        "And the end.",
    ]
    assert all(a.audio[:4] == b"RIFF" for a in audio)
    assert isinstance(events[-1], Done)
    first_delta = next(i for i, e in enumerate(events) if isinstance(e, Delta))
    assert first_delta < events.index(audio[0])


def test_later_pieces_are_due_when_the_earlier_ones_have_played() -> None:
    first, second = "Hi there. ", "That is a much longer sentence than the first. "
    voice = FakeVoice()

    async def collect() -> None:
        events = speak(reply([first, second, "The end."]), voice, DEFAULT_PROFILE)  # type: ignore[arg-type]
        assert [event async for event in events]

    asyncio.run(collect())
    (asked_0, _, due_0), (_, _, due_1), (asked_2, _, due_2) = voice.requests
    assert due_0 is not None and due_1 is not None and due_2 is not None
    assert due_0 <= asked_0 < due_0 + 0.05  # the first piece is needed now
    assert due_1 - due_0 == pytest.approx(len(first.strip()) / CHARACTERS_PER_SECOND)
    assert due_2 - due_1 == pytest.approx(len(second.strip()) / CHARACTERS_PER_SECOND)
    assert due_2 > asked_2  # asked for well before it will be needed
    assert voice.urgent == [True, False, False]  # only the first is needed at once


def test_deadline_executor_runs_the_earliest_deadline_first() -> None:
    executor = DeadlineExecutor("test")
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def block() -> str:
        started.set()
        release.wait(5)
        return "blocker"

    blocker = executor.submit(0.0, block)
    assert started.wait(5)  # the thread is busy: the rest queue up
    late = executor.submit(30.0, lambda: ran.append("late"))
    cancelled = executor.submit(10.0, lambda: ran.append("cancelled"))
    soon = executor.submit(20.0, lambda: ran.append("soon"))
    now = executor.submit(10.0, lambda: ran.append("now"))
    failing = executor.submit(25.0, lambda: 1 / 0)
    assert cancelled.cancel()
    release.set()
    assert blocker.result(5) == "blocker"
    late.result(5)
    assert ran == ["now", "soon", "late"]
    assert soon.done() and now.done() and cancelled.cancelled()
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    executor.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        executor.submit(0.0, lambda: None)


def test_an_urgent_call_does_not_wait_for_the_busy_thread() -> None:
    executor = DeadlineExecutor("test", urgent_threads=1)
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def block() -> None:
        started.set()
        release.wait(5)

    blocker = executor.submit(0.0, block)
    assert started.wait(5)
    later = executor.submit(1.0, lambda: ran.append("later"))
    urgent = executor.submit(2.0, lambda: ran.append("urgent"), urgent=True)
    urgent.result(5)  # on the urgent lane, while the first thread is still busy
    assert ran == ["urgent"] and not later.done()  # the lane takes urgent calls only
    release.set()
    later.result(5)
    blocker.result(5)
    assert ran == ["urgent", "later"]
    executor.shutdown()

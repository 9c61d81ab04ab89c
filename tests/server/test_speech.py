"""`speak` with a fake reply and a fake voice: deltas pass straight through, each sentence's
audio follows in reply order (even when a later one is synthesised first), all before done."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from limelight.chat import Delta, Done, ReplyEvent
from limelight.chat.service import Usage
from limelight.server.speech import Spoken, speak
from limelight.voice import DEFAULT_PROFILE, Audio, VoiceProfile


class FakeVoice:
    """Takes longer for shorter text, so the second sentence finishes before the first."""

    async def synthesize(self, text: str, profile: VoiceProfile) -> Audio:
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

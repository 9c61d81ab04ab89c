"""Speech on the reply path: a reply's text events with its audio woven in as it is made.

`speak` reads a chat reply's events, passes every delta on at once and feeds the text to a
`SentenceSplitter`; each completed sentence goes to a synthesis thread as soon as it is
complete, while generation goes on, and comes back as a `Spoken` event in reply order.
All audio is sent before the reply's `Done`, so a client that sees `done` has everything.

`VoiceWorker` owns the synthesis and transcription threads: the two models are CPU work
that would stall the event loop, and they share two cores with the engine, so a small
fixed pool bounds how much of the machine speech can take.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from limelight.chat import Delta, Done, ReplyEvent
from limelight.voice import (
    DEFAULT_PROFILE,
    Audio,
    SentenceSplitter,
    Speech,
    Transcriber,
    Transcript,
    VoiceError,
    VoiceProfile,
    encode,
)

log = logging.getLogger("limelight.server")
STREAM_FORMAT = "wav"  # what a browser's <audio> plays without a codec question


@dataclass(slots=True)
class Spoken:
    index: int  # the sentence's place in the reply
    text: str
    audio: bytes  # STREAM_FORMAT


SpokenEvent = ReplyEvent | Spoken


class VoiceWorker:
    def __init__(self, tts_threads: int = 1, stt_threads: int = 2) -> None:
        self.speech = Speech(num_threads=tts_threads)
        self.transcriber = Transcriber(num_threads=stt_threads)
        self._synth = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tts")
        self._listen = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stt")

    def warm_up(self) -> None:
        """Load the default voice now, so the first reply does not pay for it."""
        self.speech.synthesize("Hello.", DEFAULT_PROFILE)

    def check(self, profile: VoiceProfile) -> VoiceProfile:
        """The profile, if this server has its voice (a VoiceError naming it otherwise)."""
        if not self.speech.backend(profile.backend).has_voice(profile.voice):
            raise VoiceError(
                f"this server has no {profile.backend} voice {profile.voice!r}; "
                "GET /api/voices lists them"
            )
        return profile

    async def synthesize(self, text: str, profile: VoiceProfile) -> Audio:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._synth, self.speech.synthesize, text, profile)

    async def transcribe(self, audio: bytes, language: str | None = "en") -> Transcript:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._listen, self.transcriber.transcribe, audio, language
        )

    def shutdown(self) -> None:
        self._synth.shutdown(wait=False, cancel_futures=True)
        self._listen.shutdown(wait=False, cancel_futures=True)


def character_voice(card: Mapping[str, Any], voice: VoiceWorker) -> VoiceProfile:
    """The voice on a character's card; the default voice if it has none or one this
    server cannot speak (a card from another install may name voices not present here)."""
    extension = card.get("data", {}).get("extensions", {}).get("limelight", {})
    try:
        return voice.check(VoiceProfile.from_dict(extension.get("voice")))
    except VoiceError as err:
        log.warning("speaking %s with the default voice: %s", card.get("data", {}).get("name"), err)
        return DEFAULT_PROFILE


async def speak(
    events: AsyncIterator[ReplyEvent], voice: VoiceWorker, profile: VoiceProfile
) -> AsyncIterator[SpokenEvent]:
    """`events` with a `Spoken` event for each sentence, as soon as it is synthesised."""
    splitter = SentenceSplitter()
    pending: deque[tuple[str, asyncio.Future[Audio]]] = deque()  # in reply order
    count = 0  # sentences sent
    try:
        async for event in _with_ticks(events, pending):
            if isinstance(event, Delta):
                yield event
                sentences = splitter.push(event.text)
            else:  # the reply's end, or None: the oldest synthesis finished between deltas
                sentences = splitter.flush() if isinstance(event, Done) else []
            for text in sentences:
                pending.append((text, asyncio.ensure_future(voice.synthesize(text, profile))))
            if isinstance(event, Done) and pending:
                await asyncio.wait([future for _, future in pending])
            while pending and pending[0][1].done():
                text, future = pending.popleft()
                yield Spoken(count, text, encode(future.result(), STREAM_FORMAT))
                count += 1
            if isinstance(event, Done):
                yield event
    finally:
        for _, future in pending:
            future.cancel()


async def _with_ticks(
    events: AsyncIterator[ReplyEvent], pending: deque[tuple[str, asyncio.Future[Audio]]]
) -> AsyncIterator[ReplyEvent | None]:
    """The reply's events, and a None whenever the oldest pending synthesis completes
    before the next event arrives (so its audio goes out without waiting for a token)."""
    next_event: asyncio.Future[ReplyEvent] | None = None
    try:
        while True:
            if next_event is None:
                next_event = asyncio.ensure_future(anext(events))
            waiting: set[asyncio.Future[Any]] = {next_event}
            if pending:
                waiting.add(pending[0][1])
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not next_event.done():
                yield None
                continue
            try:
                event = next_event.result()
            except StopAsyncIteration:
                return
            next_event = None
            yield event
            if isinstance(event, Done):
                return
    finally:
        if next_event is not None and not next_event.done():
            next_event.cancel()

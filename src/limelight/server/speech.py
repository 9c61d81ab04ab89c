"""Speech on the reply path: a reply's text events with its audio woven in as it is made.

`speak` reads a chat reply's events, passes every delta on at once and feeds the text to a
`SentenceSplitter`; each completed sentence goes to a synthesis thread as soon as it is
complete, while generation goes on, and comes back as a `Spoken` event in reply order.
All audio is sent before the reply's `Done`, so a client that sees `done` has everything.

`VoiceWorker` owns the synthesis and transcription threads: the two models are CPU work
that would stall the event loop, and they share two cores with the engine, so one
synthesis thread (and a lane for first pieces, below) bounds how much of the machine
speech can take.  That thread takes the piece whose listener will need it first
(`DeadlineExecutor`): a reply's first piece is needed now, a later one when the pieces
before it have played, which `speak` estimates from their length.  So with several
replies speaking at once, one user's first sentence does not wait behind another's
fourth.  Nor behind the one already being synthesised: a first piece is urgent, and a
second thread takes urgent pieces only, so it starts at once (its audio is the listener's
whole wait; first pieces are short, so the lane is mostly idle).  In 4-user e2e runs a
first piece's audio came p50 286-296 ms after its text with the lane, 300-322 without
(two runs each): a gain within those runs' noise, kept because a first piece can no
longer wait for a whole later sentence (~250 ms) to finish.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from limelight.chat import Delta, Done, ReplyEvent
from limelight.engine.threads import lend_core
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
# Speech per second at rate 1, on the low side (Piper's joe says ~19 characters a
# second), so that a later piece's deadline comes before its turn to play, not after.
CHARACTERS_PER_SECOND = 15.0
T = TypeVar("T")


@dataclass(slots=True)
class Spoken:
    index: int  # the sentence's place in the reply
    text: str
    audio: bytes  # STREAM_FORMAT


SpokenEvent = ReplyEvent | Spoken


class DeadlineExecutor:
    """Threads that run the submitted calls earliest deadline first (deadlines are
    `time.monotonic()` seconds; equal ones run in the order submitted).  The first thread
    takes any call; the `urgent_threads` others take only calls submitted as urgent, so an
    urgent call never waits for a thread.  A call whose future is cancelled before it
    starts never runs."""

    def __init__(self, name: str, urgent_threads: int = 0) -> None:
        # (not urgent, deadline, order, call, future): urgent calls sort first
        self._queue: list[tuple[bool, float, int, Callable[[], Any], Future[Any]]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, args=(i > 0,), name=f"{name}-{i}", daemon=True)
            for i in range(1 + urgent_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, deadline: float, fn: Callable[[], T], urgent: bool = False) -> Future[T]:
        future: Future[T] = Future()
        with self._wake:
            if self._closed:
                raise RuntimeError("the executor is shut down")
            heapq.heappush(self._queue, (not urgent, deadline, next(self._order), fn, future))
            self._wake.notify_all()
        return future

    def shutdown(self) -> None:
        """Cancel what has not started; the calls running now finish."""
        with self._wake:
            self._closed = True
            for *_, future in self._queue:
                future.cancel()
            self._queue.clear()
            self._wake.notify_all()

    def _run(self, urgent_only: bool) -> None:
        while True:
            with self._wake:
                while not self._closed and not (
                    self._queue and (not urgent_only or not self._queue[0][0])
                ):
                    self._wake.wait()
                if self._closed:
                    return
                *_, fn, future = heapq.heappop(self._queue)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as err:  # the awaiting caller raises it
                future.set_exception(err)


class VoiceWorker:
    def __init__(self, tts_threads: int = 1, stt_threads: int = 2) -> None:
        self.speech = Speech(num_threads=tts_threads)
        self.transcriber = Transcriber(num_threads=stt_threads)
        self._synth = DeadlineExecutor("tts", urgent_threads=1)
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

    async def synthesize(
        self, text: str, profile: VoiceProfile, deadline: float | None = None, urgent: bool = False
    ) -> Audio:
        """`text` spoken; `deadline` (`time.monotonic()` seconds, default now) orders it
        among the syntheses waiting for the thread; an `urgent` one (a reply's first piece)
        goes before them all and never waits for a thread (`DeadlineExecutor`)."""
        deadline = time.monotonic() if deadline is None else deadline

        def spoken() -> Audio:
            with lend_core():  # the engine steps on the other cores meanwhile
                return self.speech.synthesize(text, profile)

        return await asyncio.wrap_future(self._synth.submit(deadline, spoken, urgent))

    async def transcribe(self, audio: bytes, language: str | None = "en") -> Transcript:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._listen, self.transcriber.transcribe, audio, language
        )

    def shutdown(self) -> None:
        self._synth.shutdown()
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
    needed_at: float | None = None  # when the next piece will be needed (monotonic s)
    try:
        async for event in _with_ticks(events, pending):
            if isinstance(event, Delta):
                yield event
                sentences = splitter.push(event.text)
            else:  # the reply's end, or None: the oldest synthesis finished between deltas
                sentences = splitter.flush() if isinstance(event, Done) else []
            for text in sentences:
                now, urgent = time.monotonic(), needed_at is None
                deadline = now if needed_at is None else max(now, needed_at)
                needed_at = deadline + len(text) / (CHARACTERS_PER_SECOND * profile.rate)
                job = voice.synthesize(text, profile, deadline, urgent)
                pending.append((text, asyncio.ensure_future(job)))
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

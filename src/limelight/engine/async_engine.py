"""`AsyncEngine`: many concurrent token streams over one `LLMEngine`.

The engine steps in a worker thread (PyTorch releases the GIL while it computes); asyncio
callers hand it requests and aborts through an inbox and read their deltas from a queue
each.  A stream that is cancelled or closed early aborts its request, and the worker
frees its KV blocks before it runs another step.  `from_pretrained` loads the model in
that same thread, so that the process has one OpenMP team for the engine's kernels
(threads.py says why that matters).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import torch

from limelight.engine.errors import RequestError
from limelight.engine.llm import load_engine
from limelight.engine.llm_engine import LLMEngine
from limelight.engine.tokenizer import Tokenizer
from limelight.engine.types import RequestOutput, SamplingParams, StreamDelta

T = TypeVar("T")


class AsyncEngine:
    engine: LLMEngine

    def __init__(self, engine: LLMEngine | Callable[[], LLMEngine]) -> None:
        """`engine`, or a function that builds it (called in the worker thread; its
        errors are raised here).  The worker computes on as many CPU threads as the
        calling thread would (`torch.set_num_threads` before this call sets it)."""
        self._wake = threading.Condition()
        self._inbox: list[tuple[str, list[int], SamplingParams, bool]] = []
        self._aborts: list[str] = []
        self._calls: list[tuple[Callable[[LLMEngine], Any], Future[Any]]] = []
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]] = {}
        self._closed = False
        self._counter = 0
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self._worker = threading.Thread(
            target=self._serve,
            args=(engine, torch.get_num_threads()),
            name="limelight-engine",
            daemon=True,
        )
        self._worker.start()
        self._ready.wait()
        if self._load_error is not None:
            raise self._load_error

    @property
    def tokenizer(self) -> Tokenizer:
        """The checkpoint's tokenizer, with its chat template."""
        tokenizer = self.engine.tokenizer
        assert isinstance(tokenizer, Tokenizer), "this engine was built with a test tokenizer"
        return tokenizer

    @classmethod
    def from_pretrained(cls, model: str | Path, **options: Any) -> AsyncEngine:
        return cls(lambda: load_engine(model, **options)[0])

    async def stream(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        request_id: str | None = None,
        background: bool = False,
    ) -> AsyncIterator[StreamDelta]:
        """Yield the request's deltas as they are sampled; the last has `finish_reason`.
        `background`: see `LLMEngine.add_request`."""
        token_ids = self.engine.prompt_ids(prompt)  # raises RequestError before queueing
        request_id = request_id or self._next_id()
        queue: asyncio.Queue[StreamDelta | BaseException] = asyncio.Queue()
        with self._wake:
            if self._closed:
                raise RuntimeError("the engine is shut down")
            self._streams[request_id] = (asyncio.get_running_loop(), queue)
            self._inbox.append((request_id, token_ids, params, background))
            self._wake.notify()
        finished = False
        try:
            while not finished:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finish_reason is not None
                yield item
        finally:
            with self._wake:
                self._streams.pop(request_id, None)
                if not finished:
                    self._aborts.append(request_id)
                    self._wake.notify()

    async def generate(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        request_id: str | None = None,
        background: bool = False,
    ) -> RequestOutput:
        """Run one request to completion and gather its stream into a `RequestOutput`."""
        prompt_ids = self.engine.prompt_ids(prompt)
        request_id = request_id or self._next_id()
        stream = self.stream(prompt_ids, params, request_id, background)
        deltas = [delta async for delta in stream]
        reason = deltas[-1].finish_reason
        assert reason is not None
        return RequestOutput(
            request_id=request_id,
            prompt_token_ids=prompt_ids,
            token_ids=[t for d in deltas for t in d.token_ids],
            text="".join(d.text for d in deltas),
            finish_reason=reason,
            num_cached_tokens=deltas[0].num_cached_tokens,
            logprobs=[lp for d in deltas for lp in d.logprobs],
        )

    def call(self, fn: Callable[[LLMEngine], T]) -> T:
        """`fn(engine)` run in the engine's thread between steps (nothing else steps while
        it runs); returns its result or raises its error.  It blocks: not for the event
        loop.  For work that must compute on the engine's own thread (threads.py), such
        as a benchmark that steps the engine directly."""
        done: Future[T] = Future()
        with self._wake:
            if self._closed:
                raise RuntimeError("the engine is shut down")
            self._calls.append((fn, done))
            self._wake.notify()
        return done.result()

    def shutdown(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._worker.join(timeout=30)

    def _next_id(self) -> str:
        self._counter += 1
        return f"stream-{self._counter}"

    def _serve(self, engine: LLMEngine | Callable[[], LLMEngine], num_threads: int) -> None:
        torch.set_num_threads(num_threads)  # this thread's own setting
        try:
            self.engine = engine if isinstance(engine, LLMEngine) else engine()
        except BaseException as err:  # the caller raises it
            self._load_error = err
            return
        finally:
            self._ready.set()
        self._run()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (
                    self._closed
                    or self._inbox
                    or self._aborts
                    or self._calls
                    or self.engine.has_unfinished
                ):
                    self._wake.wait()
                if self._closed:
                    return
                inbox, self._inbox = self._inbox, []
                aborts, self._aborts = self._aborts, []
                calls, self._calls = self._calls, []
            for fn, done in calls:
                try:
                    done.set_result(fn(self.engine))
                except BaseException as err:  # the caller raises it
                    done.set_exception(err)
            for request_id in aborts:
                self.engine.abort(request_id)
            for request_id, token_ids, params, background in inbox:
                try:
                    self.engine.add_request(token_ids, params, request_id, background)
                except RequestError as err:
                    self._deliver(request_id, err)
            if not self.engine.has_unfinished:
                continue
            try:
                deltas = self.engine.step()
            except Exception as err:  # a failed step fails its streams, not the process
                self._fail_all(err)
                continue
            for delta in deltas:
                self._deliver(delta.request_id, delta)
                if delta.finish_reason is not None:
                    self.engine.requests.pop(delta.request_id, None)

    def _deliver(self, request_id: str, item: StreamDelta | BaseException) -> None:
        with self._wake:
            target = self._streams.get(request_id)
        if target is not None:
            loop, queue = target
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def _fail_all(self, err: Exception) -> None:
        for request_id in list(self.engine.requests):
            self.engine.abort(request_id)
            self._deliver(request_id, err)

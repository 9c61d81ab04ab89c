"""The assembled stack of bench/e2e.py: separate processes glued by the client, as an app
backend built from off-the-shelf parts would glue them.

Three servers, each its own process: llama.cpp's OpenAI-compatible server
(`python -m llama_cpp.server`, llama-cpp-python's `[server]` extra) on the same GGUF that
limelight loads, on the same two threads; the retrieval service (bench/e2e_retrieval.py,
the same embedder); and the speech service (bench/e2e_tts.py, the same voice).  A turn:
search the user's memories, stream a chat completion with them in the prompt, and once
the whole reply is in, have it spoken.  The prompt has limelight's layout, built by
limelight's own `chat_messages` (system: the character; the conversation; the memories
and the new message last), and the sampling is limelight's reply defaults, so the two
stacks are asked the same thing.

`llama_cpp.server` answers one request at a time; that is the server as shipped and is
reported as is.  Two of its defaults are changed: `--interrupt_requests false` (by
default a waiting request cuts the streaming one short, so replies would end after a few
tokens) and the context, 4096 tokens as limelight's.  OMP_WAIT_POLICY is left alone:
ACTIVE (bench/engine_llamacpp.py) keeps idle OpenMP threads spinning, which here would
take the two cores from the retrieval and speech processes between requests.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.e2e_client import TurnResult, check_status, sse_events
from bench.e2e_process import Service, free_port, python_module
from bench.e2e_workload import UserScript, Workload
from limelight.chat import REPLY_DEFAULTS
from limelight.chat.persona import USER_NAME
from limelight.chat.prompt import PromptParts, Turn, chat_messages
from limelight.voice import MAX_INPUT_CHARS, speakable

NUM_MEMORIES = 6  # limelight's chat recalls as many (chat/service.py)
N_CTX = 4096  # limelight's max_model_len


@dataclass(slots=True)
class Services:
    llama: Service
    retrieval: Service
    tts: Service


@contextmanager
def assembled_services(gguf: Path, num_threads: int) -> Iterator[Services]:
    """The three servers, started one after another and all stopped on the way out."""
    llama_port, retrieval_port, tts_port = free_port(), free_port(), free_port()
    llama = python_module(
        "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port",
        str(llama_port), "--n_threads", str(num_threads), "--n_threads_batch",
        str(num_threads), "--n_ctx", str(N_CTX), "--interrupt_requests", "false",
    )  # fmt: skip
    with ExitStack() as stack:
        services = Services(
            stack.enter_context(Service("llama_cpp.server", llama, llama_port, "/v1/models")),
            stack.enter_context(retrieval_service(retrieval_port)),
            stack.enter_context(tts_service(tts_port)),
        )
        yield services


def retrieval_service(port: int) -> Service:
    command = python_module("bench.e2e_retrieval", "--port", str(port))
    return Service("retrieval", command, port, env=_bench_path())


def tts_service(port: int) -> Service:
    command = python_module("bench.e2e_tts", "--port", str(port))
    return Service("tts", command, port, env=_bench_path())


class AssembledStack:
    """One conversation per user, kept by the client (the app backend) as it goes."""

    def __init__(self, services: Services, definition: str, greeting: str, max_tokens: int):
        self.services, self.definition, self.max_tokens = services, definition, max_tokens
        self.greeting = greeting
        self.histories: dict[str, list[Turn]] = {}

    async def turn(
        self, client: httpx.AsyncClient, user: UserScript, turn: int, message: str
    ) -> TurnResult:
        history = self.histories.setdefault(user.name, [Turn("assistant", self.greeting)])
        start = time.perf_counter()
        memories = await self._search(client, user.name, message)
        retrieval_ms = (time.perf_counter() - start) * 1e3
        parts = PromptParts(self.definition, "", list(history), _memory_block(memories), message)
        ttft, reply, num_tokens = await self._complete(client, chat_messages(parts), start)
        reply_ms = (time.perf_counter() - start) * 1e3
        spoken = speakable(reply)  # what limelight reads aloud too: no *actions*, no markup
        first_audio = await self._speak(client, spoken, start) if spoken else None
        history += [Turn("user", message), Turn("assistant", reply.strip())]
        return TurnResult(
            user=user.name,
            turn=turn,
            ttft_ms=ttft,
            first_audio_ms=first_audio,
            reply_ms=reply_ms,
            total_ms=(time.perf_counter() - start) * 1e3,
            num_audio=int(first_audio is not None),
            completion_tokens=num_tokens,
            reply=reply.strip(),
            retrieval_ms=retrieval_ms,
            speech_text_ms=reply_ms,
        )

    async def _search(self, client: httpx.AsyncClient, user: str, query: str) -> list[str]:
        body = {"user": user, "query": query, "k": NUM_MEMORIES}
        response = await client.post(self.services.retrieval.url + "/search", json=body)
        await check_status(response, "retrieval")
        return list(response.json()["texts"])

    async def _complete(
        self, client: httpx.AsyncClient, messages: list[dict[str, str]], start: float
    ) -> tuple[float | None, str, int]:
        """Stream the reply: (ms to its first text, the text, its chunks ≈ tokens)."""
        url = self.services.llama.url + "/v1/chat/completions"
        body = {**_sampling(self.max_tokens), "messages": messages, "stream": True}
        ttft, pieces = None, []
        async with client.stream("POST", url, json=body) as response:
            await check_status(response, "llama_cpp.server")
            async for _event, data in sse_events(response):
                if data.strip() == "[DONE]":
                    break
                delta = json.loads(data)["choices"][0].get("delta", {})
                piece = delta.get("content") or ""
                if piece and ttft is None:
                    ttft = (time.perf_counter() - start) * 1e3
                pieces.append(piece)
        return ttft, "".join(pieces), sum(1 for p in pieces if p)

    async def _speak(self, client: httpx.AsyncClient, text: str, start: float) -> float:
        """Have the whole reply spoken: ms to the first byte of the WAV."""
        first = None
        url = self.services.tts.url + "/speak"
        body = {"text": text[:MAX_INPUT_CHARS]}
        async with client.stream("POST", url, json=body) as response:
            await check_status(response, "tts")
            async for chunk in response.aiter_raw():
                if chunk and first is None:
                    first = (time.perf_counter() - start) * 1e3
        assert first is not None, "the speech service answered an empty body"
        return first


def fill_memories(services: Services, memories: dict[str, list[str]]) -> None:
    """Give the retrieval service each user's memories (limelight's, as text)."""
    for user, texts in memories.items():
        if texts:
            body = {"user": user, "texts": texts}
            response = httpx.post(services.retrieval.url + "/memories", json=body, timeout=120)
            if response.status_code != 200:
                raise services.retrieval.fail(f"adding memories answered {response.text}")


def build_stack(
    services: Services, slug: str, card: dict[str, Any], workload: Workload
) -> AssembledStack:
    """The character as limelight renders it: the same definition and greeting."""
    from limelight.characters import parse_card
    from limelight.chat.persona import persona

    who = persona(slug, parse_card(card).card)
    greeting = who.macros(who.greetings[0], slug) if who.greetings else ""
    return AssembledStack(services, who.definition, greeting, workload.max_tokens)


def _sampling(max_tokens: int) -> dict[str, Any]:
    """limelight's reply defaults in the OpenAI request's terms (llama.cpp's names)."""
    return {
        "max_tokens": max_tokens,
        "temperature": REPLY_DEFAULTS.temperature,
        "top_p": REPLY_DEFAULTS.top_p,
        "repeat_penalty": REPLY_DEFAULTS.repetition_penalty,
        "stop": list(REPLY_DEFAULTS.stop or []),
    }


def _memory_block(memories: list[str]) -> str:
    """The memories as limelight's prompt shows them (chat/service.py's `_retrieved`)."""
    if not memories:
        return ""
    lines = "\n".join(f"- {m}" for m in memories)
    return f"[Memories of earlier conversations with {USER_NAME}:\n{lines}]"


def _bench_path() -> dict[str, str]:
    """`python -m bench.…` from any working directory: the checkout on PYTHONPATH."""
    root = str(Path(__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": root + (os.pathsep + existing if existing else "")}

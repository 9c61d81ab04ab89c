"""The OpenAI-compatible API: chat completions, completions, models, embeddings.

`model` names the base model (a plain completion over the client's messages) or
`character/<slug>`: then the character's definition, lore and the memory of the request's
`user` shape the prompt, and the exchange is remembered.  Both stream the same way.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import select

from limelight.chat import REPLY_DEFAULTS, Delta, Done
from limelight.engine.types import Constraint, SamplingParams
from limelight.server.deps import CallerDep, DatabaseDep, Services, ServicesDep
from limelight.server.errors import APIError, error_body
from limelight.server.schemas import openai as oa
from limelight.store import Character

router = APIRouter(prefix="/v1", tags=["openai"])
CHARACTER = "character/"
BASE_DEFAULTS = SamplingParams(temperature=1.0, max_tokens=256)


@dataclass(slots=True)
class Piece:
    """One step of a reply in the API's terms: new text, or the end with usage."""

    text: str = ""
    finish_reason: str | None = None
    usage: oa.Usage | None = None


@router.get("/models")
def list_models(svc: ServicesDep, db: DatabaseDep, _: CallerDep) -> dict[str, Any]:
    slugs = db.scalars(select(Character.slug).order_by(Character.slug))
    cards = [oa.ModelCard(id=svc.model_name)] + [oa.ModelCard(id=CHARACTER + s) for s in slugs]
    return {"object": "list", "data": [c.model_dump() for c in cards]}


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    body: oa.ChatCompletionRequest, svc: ServicesDep, caller: CallerDep
) -> JSONResponse | StreamingResponse:
    user = caller.user(body.user)
    messages = [{"role": _role(m.role), "content": m.text} for m in body.messages]
    if body.model.startswith(CHARACTER):
        params = _params(body, replace(REPLY_DEFAULTS), body.max_completion_tokens)
        events = _character_pieces(svc, user, body.model.removeprefix(CHARACTER), messages, params)
    else:
        _check_base_model(svc, body.model)
        prompt = svc.engine.tokenizer.apply_chat_template(messages)
        params = _params(body, BASE_DEFAULTS, body.max_completion_tokens)
        events = _engine_pieces(svc, prompt, params)
    return await _respond(body, events, chat=True)


@router.post("/completions", response_model=None)
async def create_completion(
    body: oa.CompletionRequest, svc: ServicesDep, caller: CallerDep
) -> JSONResponse | StreamingResponse:
    caller.user(body.user)
    _check_base_model(svc, body.model)
    events = _engine_pieces(svc, body.prompt, _params(body, BASE_DEFAULTS, None))
    return await _respond(body, events, chat=False)


@router.post("/embeddings")
def create_embeddings(body: oa.EmbeddingRequest, svc: ServicesDep, caller: CallerDep) -> dict:
    caller.user(body.user)
    if svc.embedder is None or body.model not in (svc.embedder.name, "default"):
        known = svc.embedder.name if svc.embedder is not None else "none (memory is off)"
        raise APIError(
            404,
            f"unknown embedding model {body.model!r}; this server has {known}",
            "model",
            "model_not_found",
        )
    vectors = svc.embedder.embed(body.texts)
    count = sum(len(svc.engine.tokenizer.encode(t)) for t in body.texts)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": svc.embedder.name,
        "usage": {"prompt_tokens": count, "total_tokens": count},
    }


# --- replies as pieces ----------------------------------------------------------------------
async def _engine_pieces(
    svc: Services, prompt: str | list[int], params: SamplingParams
) -> AsyncIterator[Piece]:
    prompt_ids = svc.engine.engine.prompt_ids(prompt)  # a bad prompt fails before streaming
    completion = cached = 0
    async for delta in svc.engine.stream(prompt_ids, params):
        completion += len(delta.token_ids)
        cached = cached or delta.num_cached_tokens
        if delta.text:
            yield Piece(delta.text)
        if delta.finish_reason is not None:
            yield Piece("", delta.finish_reason, _usage(len(prompt_ids), completion, cached))


async def _character_pieces(
    svc: Services, user: str, slug: str, messages: list[dict[str, str]], params: SamplingParams
) -> AsyncIterator[Piece]:
    async for event in svc.chat.complete(user, slug, messages, params):
        if isinstance(event, Delta):
            yield Piece(event.text)
        elif isinstance(event, Done):
            u = event.usage
            usage = _usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens)
            yield Piece("", event.finish_reason, usage)


async def _respond(
    body: oa.SamplingFields, events: AsyncIterator[Piece], chat: bool
) -> JSONResponse | StreamingResponse:
    first = await anext(events)  # errors before the first token become a 4xx, not a stream
    ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = _sse(ident, body.model, chat, first, events, include_usage)
        return StreamingResponse(chunks, media_type="text/event-stream")
    pieces = [first] + [p async for p in events]
    text = "".join(p.text for p in pieces)
    last = pieces[-1]
    choice: dict[str, Any] = {"index": 0, "finish_reason": last.finish_reason}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice.update(text=text, logprobs=None)
    return JSONResponse(
        {
            "id": ident,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [choice],
            "usage": last.usage.model_dump() if last.usage else None,
        }
    )


async def _sse(
    ident: str, model: str, chat: bool, first: Piece, rest: AsyncIterator[Piece], usage: bool
) -> AsyncIterator[str]:
    created = int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        data = {
            "id": ident,
            "object": kind,
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(data)}\n\n"

    def choice(piece: Piece, role: bool = False) -> dict[str, Any]:
        if not chat:
            return {"index": 0, "text": piece.text, "finish_reason": piece.finish_reason}
        delta = {"role": "assistant", "content": piece.text} if role else {"content": piece.text}
        return {
            "index": 0,
            "delta": delta if piece.text or role else {},
            "finish_reason": piece.finish_reason,
        }

    yield chunk([choice(first, role=True)])
    last = first
    try:
        async for piece in rest:
            last = piece
            yield chunk([choice(piece)])
    except Exception as err:  # mid-stream: the status is sent, so the error goes in-band
        yield f"data: {json.dumps(error_body(500, f'the reply failed: {err}'))}\n\n"
    if usage and last.usage is not None:
        yield chunk([], usage=last.usage.model_dump())
    yield "data: [DONE]\n\n"


# --- request fields -------------------------------------------------------------------------
def _params(
    body: oa.SamplingFields, defaults: SamplingParams, max_completion: int | None
) -> SamplingParams:
    given: dict[str, Any] = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": body.seed,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "max_tokens": max_completion or body.max_tokens,
    }
    params = replace(defaults, **{k: v for k, v in given.items() if v is not None})
    if body.stop is not None:
        params = replace(params, stop=[body.stop] if isinstance(body.stop, str) else body.stop)
    fmt = getattr(body, "response_format", None)
    if fmt is not None and fmt.type != "text":
        params = replace(params, constraint=_constraint(fmt))
    return params


def _constraint(fmt: oa.ResponseFormat) -> Constraint:
    if fmt.type == "json_object":
        return Constraint.json_object()
    if fmt.json_schema is None or not fmt.json_schema.schema_:
        raise APIError(
            400, "response_format json_schema needs a 'json_schema.schema'", "response_format"
        )
    return Constraint.json_schema(fmt.json_schema.schema_)


def _check_base_model(svc: Services, model: str) -> None:
    if model != svc.model_name:
        raise APIError(
            404,
            f"unknown model {model!r}; GET /v1/models lists this server's "
            f"models ({svc.model_name!r} and 'character/<slug>')",
            "model",
            "model_not_found",
        )


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # what the official client asks for by default
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return [float(x) for x in vector]


def _role(role: str) -> str:
    return {"developer": "system", "tool": "user"}.get(role, role)


def _usage(prompt: int, completion: int, cached: int) -> oa.Usage:
    return oa.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=oa.UsageDetails(cached_tokens=cached),
    )

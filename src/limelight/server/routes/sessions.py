"""/api/sessions: a user's conversations with characters and the messages in them.

Sending a message and regenerating a reply stream Server-Sent Events (`delta` events with
new text, then one `done` event with the stored message and its usage) unless the body
says `"stream": false`.  With `"speak": true` the stream also carries an `audio` event per
sentence in the character's voice (`{"index", "text", "format", "audio": base64}`), sent as
soon as the sentence is synthesised, all before `done`.  `POST /{id}/voice` takes a
recording instead of text: a `transcript` event first, then the same stream.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from limelight.chat import REPLY_DEFAULTS, Delta, Done, ReplyEvent, tree
from limelight.engine.types import SamplingParams
from limelight.server.deps import CallerDep, DatabaseDep, Services, ServicesDep
from limelight.server.errors import APIError, error_body
from limelight.server.schemas import api
from limelight.server.speech import STREAM_FORMAT, Spoken, SpokenEvent, character_voice, speak
from limelight.store import Character, ChatSession

router = APIRouter(prefix="/api/sessions", tags=["sessions"])


def owned_session(
    session_id: str, db: DatabaseDep, caller: CallerDep, user: str | None = None
) -> ChatSession:
    """The session in the path, if it belongs to the caller's user (else 404)."""
    return tree.read_session(db, session_id, caller.user(user))


ChatSessionDep = Annotated[ChatSession, Depends(owned_session)]


@router.post("", status_code=201)
def create_session(
    body: api.SessionCreate,
    svc: ServicesDep,
    db: DatabaseDep,
    caller: CallerDep,
    after: BackgroundTasks,
) -> api.SessionPublic:
    chat = svc.chat.start_session(db, caller.user(body.user), body.character)
    after.add_task(svc.chat.warm, chat.user_id, chat.id)  # once committed and answered
    return session_public(db, chat)


@router.get("")
def list_sessions(
    db: DatabaseDep, caller: CallerDep, character: str | None = None, user: str | None = None
) -> list[api.SessionPublic]:
    query = select(ChatSession).where(ChatSession.user_id == caller.user(user))
    if character is not None:
        query = query.join(Character).where(Character.slug == character)
    chats = db.scalars(query.order_by(ChatSession.updated_at.desc()))
    return [session_public(db, c, with_messages=False) for c in chats]


@router.get("/{session_id}")
def read_session(chat: ChatSessionDep, db: DatabaseDep) -> api.SessionPublic:
    return session_public(db, chat)


@router.delete("/{session_id}", status_code=204)
def delete_session(chat: ChatSessionDep, db: DatabaseDep) -> Response:
    db.delete(chat)
    return Response(status_code=204)


@router.get("/{session_id}/prompt")
def read_prompt(
    session_id: str, content: str, svc: ServicesDep, caller: CallerDep, user: str | None = None
) -> dict[str, object]:
    """The prompt the model would see if `content` were sent now (nothing is stored)."""
    prompt = svc.chat.preview(caller.user(user), session_id, content)
    return {
        "prompt": prompt.text,
        "num_tokens": prompt.num_tokens,
        "num_dropped_turns": prompt.num_dropped,
    }


@router.post("/{session_id}/messages", response_model=None)
async def create_message(
    session_id: str,
    body: api.MessageCreate,
    svc: ServicesDep,
    caller: CallerDep,
    user: str | None = None,
) -> Response:
    user_id = caller.user(user)
    params = _params(body.max_tokens, body.temperature)
    events = svc.chat.send(user_id, session_id, body.content, params)
    return await _reply(_spoken(svc, user_id, session_id, events, body.speak), body.stream)


@router.post("/{session_id}/voice", response_model=None)
async def create_voice_message(
    session_id: str,
    file: Annotated[UploadFile, File()],
    svc: ServicesDep,
    caller: CallerDep,
    speak: Annotated[bool, Form()] = True,
    max_tokens: Annotated[int | None, Form(ge=1, le=4096)] = None,
    temperature: Annotated[float | None, Form(ge=0, le=2)] = None,
    user: str | None = None,
) -> Response:
    """A spoken turn: the recording is transcribed, then answered like a typed message."""
    user_id = caller.user(user)
    with svc.store.reader() as db:
        tree.read_session(db, session_id, user_id)  # 404 before any audio work
    if svc.voice is None:
        raise APIError(400, "voice is off on this server (LIMELIGHT_VOICE=false)")
    transcript = await svc.voice.transcribe(await file.read())
    if not transcript.text.strip():
        raise APIError(400, "no speech was heard in the recording", "file")
    params = _params(max_tokens, temperature)
    events = svc.chat.send(user_id, session_id, transcript.text.strip(), params)
    heard = f"event: transcript\ndata: {json.dumps({'text': transcript.text.strip()})}\n\n"
    return await _reply(_spoken(svc, user_id, session_id, events, speak), True, heard)


@router.post("/{session_id}/messages/{message_id}/regenerate", response_model=None)
async def regenerate_message(
    session_id: str,
    message_id: str,
    body: api.Regenerate,
    svc: ServicesDep,
    caller: CallerDep,
    user: str | None = None,
) -> Response:
    user_id = caller.user(user)
    params = _params(body.max_tokens, body.temperature)
    events = svc.chat.regenerate(user_id, session_id, message_id, params)
    return await _reply(_spoken(svc, user_id, session_id, events, body.speak), body.stream)


@router.post("/{session_id}/messages/{message_id}/swipe")
def swipe_message(
    message_id: str,
    body: api.Swipe,
    chat: ChatSessionDep,
    db: DatabaseDep,
) -> api.SessionPublic:
    tree.swipe(db, chat, message_id, body.step)
    return session_public(db, chat)


@router.patch("/{session_id}/messages/{message_id}")
def update_message(
    message_id: str,
    body: api.MessageUpdate,
    chat: ChatSessionDep,
    db: DatabaseDep,
) -> api.SessionPublic:
    tree.edit_message(db, chat, message_id, body.content)
    return session_public(db, chat)


@router.delete("/{session_id}/messages/{message_id}")
def delete_message(
    message_id: str,
    chat: ChatSessionDep,
    db: DatabaseDep,
) -> api.SessionPublic:
    tree.delete_message(db, chat, message_id)
    return session_public(db, chat)


@router.post("/{session_id}/messages/{message_id}/branch", status_code=201)
def branch_session(
    message_id: str,
    chat: ChatSessionDep,
    db: DatabaseDep,
) -> api.SessionPublic:
    return session_public(db, tree.branch(db, chat, message_id))


def session_public(db: Session, chat: ChatSession, with_messages: bool = True) -> api.SessionPublic:
    character = db.get(Character, chat.character_id)
    assert character is not None
    branch = tree.path_with_swipes(db, chat) if with_messages else []
    public = []
    for message, index, count in branch:
        public.append(
            api.MessagePublic(
                id=message.id,
                parent_id=message.parent_id,
                role=message.role,
                content=message.content,
                created_at=message.created_at,
                swipe_index=index,
                swipe_count=count,
                prompt_tokens=message.prompt_tokens,
                cached_tokens=message.cached_tokens,
                completion_tokens=message.completion_tokens,
            )
        )
    return api.SessionPublic(
        id=chat.id,
        character=character.slug,
        user=chat.user_id,
        title=chat.title,
        created_at=chat.created_at,
        updated_at=chat.updated_at,
        messages=public,
    )


def _params(max_tokens: int | None, temperature: float | None) -> SamplingParams:
    given: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    return replace(REPLY_DEFAULTS, **{k: v for k, v in given.items() if v is not None})


def _spoken(
    svc: Services,
    user_id: str,
    session_id: str,
    events: AsyncIterator[ReplyEvent],
    is_spoken: bool,
) -> AsyncIterator[SpokenEvent]:
    if not is_spoken:
        return events
    if svc.voice is None:
        raise APIError(400, "voice is off on this server (LIMELIGHT_VOICE=false)", "speak")
    with svc.store.reader() as db:
        chat = tree.read_session(db, session_id, user_id)
        character = db.get(Character, chat.character_id)
        assert character is not None
        profile = character_voice(character.card, svc.voice)
    return speak(events, svc.voice, profile)


async def _reply(events: AsyncIterator[SpokenEvent], stream: bool, preamble: str = "") -> Response:
    first = await anext(events)  # a missing session or empty message is a 4xx, not a stream
    if not stream:
        rest = [first] + [e async for e in events]
        done = rest[-1]
        assert isinstance(done, Done)
        body = _done(done)
        spoken = [_audio(e) for e in rest if isinstance(e, Spoken)]
        return JSONResponse({**body, "audio": spoken} if spoken else body)
    return StreamingResponse(_sse(preamble, first, events), media_type="text/event-stream")


async def _sse(
    preamble: str, first: SpokenEvent, rest: AsyncIterator[SpokenEvent]
) -> AsyncIterator[str]:
    yield preamble + _event(first)
    try:
        async for event in rest:
            yield _event(event)
    except Exception as err:  # the status is sent: the error goes in-band
        yield f"event: error\ndata: {json.dumps(error_body(500, f'the reply failed: {err}'))}\n\n"


def _event(event: SpokenEvent) -> str:
    if isinstance(event, Delta):
        return f"event: delta\ndata: {json.dumps({'text': event.text})}\n\n"
    if isinstance(event, Spoken):
        return f"event: audio\ndata: {json.dumps(_audio(event))}\n\n"
    return f"event: done\ndata: {json.dumps(_done(event))}\n\n"


def _audio(event: Spoken) -> dict[str, object]:
    audio = base64.b64encode(event.audio).decode()
    return {"index": event.index, "text": event.text, "format": STREAM_FORMAT, "audio": audio}


def _done(event: Done) -> dict[str, object]:
    return {
        "message": {
            "id": event.message_id,
            "parent_id": event.parent_id,
            "role": "assistant",
            "content": event.content,
        },
        "finish_reason": event.finish_reason,
        "usage": asdict(event.usage),
    }

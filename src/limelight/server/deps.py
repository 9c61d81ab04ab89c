"""What a route can ask for: the app's services and the user a request acts for.

`Services` is built once by `app.py` at start-up and hung on `app.state`; routes take it
and the caller through the `Annotated` aliases below.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from limelight.chat import ChatService
from limelight.engine.async_engine import AsyncEngine
from limelight.memory.embedder import Embedder
from limelight.memory.service import MemoryService
from limelight.server import auth
from limelight.server.errors import APIError
from limelight.server.settings import Settings
from limelight.server.speech import VoiceWorker
from limelight.store import Store

LOCAL_USER = "local"  # who a request acts for when no keys are configured and none is named


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    engine: AsyncEngine
    model_name: str
    chat: ChatService
    memory: MemoryService | None  # None when memory is off
    embedder: Embedder | None
    voice: VoiceWorker | None  # None when voice is off


def services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]


@dataclass(slots=True)
class Caller:
    """Who sent the request: the key's user, or nobody in particular (no keys configured)."""

    key_user: str | None

    def user(self, requested: str | None) -> str:
        """The user a request acts for; a key only ever reaches its own user's data."""
        if self.key_user is None:
            return requested or LOCAL_USER
        if requested not in (None, self.key_user):
            raise APIError(403, f"this API key belongs to another user than {requested!r}")
        return self.key_user


def caller(request: Request, svc: ServicesDep) -> Caller:
    with svc.store.reader() as db:
        if not auth.keys_required(db):
            return Caller(None)
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""  # the scheme has no case
        user = auth.user_for_key(db, key) if key else None
    if user is None:
        message = "a valid API key is required: send it as 'Authorization: Bearer <key>'"
        raise APIError(401, message, code="invalid_api_key")
    return Caller(user)


CallerDep = Annotated[Caller, Depends(caller)]


def database(svc: ServicesDep, _: CallerDep) -> Iterator[Session]:
    """The request's unit of work.  It depends on the caller so that the key check's own
    short session is over before this one begins: SQLite transactions take the write lock
    when they begin, and a second session inside the first would wait for it."""
    with svc.store.session() as db:
        yield db


# Committed when the route returns, before the response is sent: a client that got its
# 201 can read the row at once, and a failed commit is answered as an error.
DatabaseDep = Annotated[Session, Depends(database, scope="function")]

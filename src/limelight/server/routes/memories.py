"""/api/characters/{slug}/memories: what a character remembers about one user.

`user` names the user as the OpenAI requests' `user` field does; with API keys on, a key
reaches only its own user's memories.  Editing keeps the old text as history (the new
version supersedes it); deleting removes a memory and its history.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from limelight.memory.service import MemoryService
from limelight.server.deps import CallerDep, DatabaseDep, ServicesDep
from limelight.server.errors import APIError
from limelight.server.routes.characters import read_row
from limelight.server.schemas import api
from limelight.store import Memory

router = APIRouter(prefix="/api/characters/{slug}/memories", tags=["memories"])


@router.get("")
def list_memories(
    slug: str,
    svc: ServicesDep,
    db: DatabaseDep,
    caller: CallerDep,
    user: str | None = None,
    history: bool = False,
) -> list[api.MemoryPublic]:
    character = read_row(db, slug)
    rows = _memory(svc).list(db, caller.user(user), character.id, include_history=history)
    return [_public(m) for m in rows]


@router.patch("/{memory_id}")
def update_memory(
    slug: str,
    memory_id: str,
    body: api.MemoryUpdate,
    svc: ServicesDep,
    db: DatabaseDep,
    caller: CallerDep,
    user: str | None = None,
) -> api.MemoryPublic:
    character = read_row(db, slug)
    row = _memory(svc).update(db, caller.user(user), character.id, memory_id, body.text)
    return _public(row)


@router.delete("/{memory_id}", status_code=204)
def delete_memory(
    slug: str,
    memory_id: str,
    svc: ServicesDep,
    db: DatabaseDep,
    caller: CallerDep,
    user: str | None = None,
) -> Response:
    character = read_row(db, slug)
    _memory(svc).delete(db, caller.user(user), character.id, memory_id)
    return Response(status_code=204)


def _memory(svc: ServicesDep) -> MemoryService:
    if svc.memory is None:
        raise APIError(404, "memory is off on this server (LIMELIGHT_MEMORY=false)")
    return svc.memory


def _public(row: Memory) -> api.MemoryPublic:
    return api.MemoryPublic(
        id=row.id,
        kind=row.kind,
        text=row.text,
        source_ids=row.source_ids,
        created_at=row.created_at,
        superseded_by=row.superseded_by,
    )

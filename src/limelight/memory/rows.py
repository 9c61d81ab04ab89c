"""Rows of the `memories` table ↔ the memory package's `MemoryItem`s and `Turn`s.

The conversions and queries `service.py` needs; no policy lives here.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from limelight.memory.types import MemoryItem, MemoryKind, Turn
from limelight.store import Memory, Message

USER_NAME = "User"  # how transcripts and prompts name the user (as chat/persona.py does)
Owner = tuple[str, int]  # (user id, character id)
KINDS = ("episode", "fact", "summary")


def live(user_id: str, character_id: int) -> Select[Memory]:
    """The owner's current memories (none superseded), newest first."""
    return (
        select(Memory)
        .where(Memory.user_id == user_id, Memory.character_id == character_id)
        .where(Memory.superseded_by.is_(None))
        .order_by(Memory.created_at.desc())
    )


def is_replaced(db: Session, memory_id: str) -> bool:
    """A memory the user edited (a newer version supersedes it)."""
    row = db.get(Memory, memory_id)
    return row is not None and row.superseded_by is not None


def turn(message: Message, character_name: str) -> Turn:
    speaker = USER_NAME if message.role == "user" else character_name
    return Turn(message.id, speaker, message.content, message.created_at, message.session_id)


def to_row(owner: Owner, item: MemoryItem, **extra: Any) -> Memory:
    vector = item.embedding.astype(np.float32).tobytes() if item.embedding is not None else None
    return Memory(
        id=item.id,
        user_id=owner[0],
        character_id=owner[1],
        kind=item.kind,
        text=item.text,
        source_ids=list(item.source_ids),
        context=list(item.context),
        about=list(item.about),
        embedding=vector,
        created_at=item.created_at,
        **extra,
    )


def to_item(row: Memory) -> MemoryItem:
    vector = np.frombuffer(row.embedding, dtype=np.float32) if row.embedding else None
    return MemoryItem(
        id=row.id,
        kind=kind(row.kind),
        text=row.text,
        source_ids=tuple(row.source_ids),
        created_at=row.created_at,
        context=tuple(row.context),
        about=tuple(row.about),
        embedding=vector,
    )


def kind(name: str) -> MemoryKind:
    assert name in KINDS, name
    return cast(MemoryKind, name)

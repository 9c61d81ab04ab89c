"""The relational schema of limelight's product data, as SQLAlchemy 2 ORM classes.

Owns the table definitions only: which package writes which rows is the business of
`characters/`, `chat/` and `memory/`.  Schema changes go through an Alembic revision in
`migrations/versions/`; `tests/store/test_migrations.py` checks that the migrated schema
equals these classes.

Identifiers: users are named by the caller (an OpenAI request's `user` field, a CLI flag),
characters by a slug, sessions, messages and memories by random UUID hex strings.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # stored naive, always UTC


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[str]: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key, stored only as its SHA-256; it reaches its user's data and nothing else."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Character(Base):
    """A character: its card (the V3 card as a dict, unknown fields included) and avatar."""

    __tablename__ = "characters"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(500))
    card: Mapped[dict[str, Any]]
    avatar: Mapped[bytes | None] = mapped_column(LargeBinary)
    is_builtin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CharacterAsset(Base):
    """A file that came with a CHARX card (besides the avatar), kept for export."""

    __tablename__ = "character_assets"

    id: Mapped[int] = mapped_column(primary_key=True)
    character_id: Mapped[int] = mapped_column(ForeignKey("characters.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(500))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ChatSession(Base):
    """One conversation of a user with a character; its messages form a tree.

    `leaf_id` is the tip of the branch on screen; `profile` freezes the user's memory
    summary when the session starts, so that the prompt's early part stays identical from
    turn to turn (prefix cache); `history_start_id` is the oldest message still in the
    prompt once the conversation outgrew the context.
    """

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    character_id: Mapped[int] = mapped_column(ForeignKey("characters.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(500), default="")
    profile: Mapped[str] = mapped_column(Text, default="")
    leaf_id: Mapped[str | None] = mapped_column(String(32))
    history_start_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_sessions_user_character", "user_id", "character_id"),)


class Message(Base):
    """A message in a session's tree: siblings (same parent) are swipes or branches."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))  # "user" | "assistant"
    content: Mapped[str] = mapped_column(Text)
    # a user message's retrieved memories and lore, as its prompt showed them before it
    context: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int | None]
    cached_tokens: Mapped[int | None]  # prompt tokens served from the prefix cache
    completion_tokens: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_messages_session", "session_id", "created_at"),)


class Memory(Base):
    """Something a character remembers about a user: an episode, a fact or the summary.

    Nothing is overwritten: an edit or a contradicting fact adds a new row and points the
    old one at it through `superseded_by`, so the history stays; only a user's explicit
    delete removes rows.
    """

    __tablename__ = "memories"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    character_id: Mapped[int] = mapped_column(ForeignKey("characters.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # "episode" | "fact" | "summary"
    text: Mapped[str] = mapped_column(Text)
    source_ids: Mapped[list[str]] = mapped_column(default=list)  # messages it came from
    context: Mapped[list[str]] = mapped_column(default=list)  # what it is matched on
    about: Mapped[list[str]] = mapped_column(default=list)  # the people it is about
    key: Mapped[str | None] = mapped_column(String(500))  # a fact's subject: attribute
    fact: Mapped[dict[str, Any] | None]  # a fact's subject, attribute and value
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)  # float32 (memory/index.py)
    superseded_by: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("memories.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_memories_owner", "user_id", "character_id", "kind"),)


class MemoryJob(Base):
    """An exchange waiting for memory work; written with the reply, done in the background.

    A job survives a crash: the worker picks up every job still `pending` when it starts.
    """

    __tablename__ = "memory_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    character_id: Mapped[int] = mapped_column(ForeignKey("characters.id", ondelete="CASCADE"))
    message_ids: Mapped[list[str]]
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|done|failed
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

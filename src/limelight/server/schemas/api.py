"""Bodies of the product API under /api: characters, sessions, messages, memories.

Schema families follow the resource: `CharacterCreate`/`CharacterUpdate` in,
`CharacterPublic`/`CharacterSummary` out, and so on.  Unknown fields are refused here
(unlike the OpenAI schemas) so that a typo is an error, not a silent no-op.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME = Field(min_length=1, max_length=200)
TEXT = Field(default="", max_length=100_000)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CharacterFields(Strict):
    description: str = TEXT
    personality: str = TEXT
    scenario: str = TEXT
    first_mes: str = TEXT
    mes_example: str = TEXT
    system_prompt: str = TEXT
    post_history_instructions: str = TEXT
    creator_notes: str = TEXT
    alternate_greetings: list[str] = Field(default_factory=list, max_length=100)
    tags: list[str] = Field(default_factory=list, max_length=100)
    creator: str = Field(default="", max_length=200)
    character_version: str = Field(default="", max_length=100)
    extensions: dict[str, Any] = Field(default_factory=dict)
    # {backend, voice, rate, pitch, variability}: kept in extensions.limelight.voice
    voice: dict[str, Any] | None = None


class CharacterCreate(CharacterFields):
    name: str = NAME


class CharacterUpdate(Strict):
    """Only the fields given change; everything else on the card stays as it is."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = None
    personality: str | None = None
    scenario: str | None = None
    first_mes: str | None = None
    mes_example: str | None = None
    system_prompt: str | None = None
    post_history_instructions: str | None = None
    creator_notes: str | None = None
    alternate_greetings: list[str] | None = None
    tags: list[str] | None = None
    creator: str | None = None
    character_version: str | None = None
    extensions: dict[str, Any] | None = None
    voice: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> CharacterUpdate:
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null; leave a field out to keep it")
        return self


class CharacterSummary(BaseModel):
    slug: str
    name: str
    description: str
    tags: list[str]
    avatar_url: str
    is_builtin: bool
    voice: dict[str, Any] | None = None


class CharacterPublic(CharacterSummary):
    card: dict[str, Any]  # the whole V3 card, unknown fields included
    warnings: list[str] = Field(default_factory=list)  # from an import: fields filled in


class SessionCreate(Strict):
    character: str = Field(min_length=1, max_length=200)
    user: str | None = Field(default=None, max_length=200)


class MessagePublic(BaseModel):
    id: str
    parent_id: str | None
    role: str
    content: str
    created_at: datetime
    swipe_index: int  # its place among its siblings
    swipe_count: int
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    completion_tokens: int | None = None


class SessionPublic(BaseModel):
    id: str
    character: str
    user: str
    title: str
    created_at: datetime
    updated_at: datetime
    messages: list[MessagePublic] = Field(default_factory=list)  # the branch on screen


class MessageCreate(Strict):
    content: str = Field(min_length=1, max_length=32_000)
    stream: bool = True
    speak: bool = False  # add the reply's speech, sentence by sentence
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float | None = Field(default=None, ge=0, le=2)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the message is empty")
        return value


class Regenerate(Strict):
    stream: bool = True
    speak: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float | None = Field(default=None, ge=0, le=2)


class MessageUpdate(Strict):
    content: str = Field(min_length=1, max_length=32_000)


class Swipe(Strict):
    step: int = Field(default=1, ge=-100, le=100)


class VoicePublic(BaseModel):
    backend: str
    voice: str
    label: str


class VoicePreview(Strict):
    text: str = Field(default="Hello! This is how I sound.", min_length=1, max_length=1000)
    voice: dict[str, Any]  # a voice profile, as on a character


class MemoryPublic(BaseModel):
    id: str
    kind: str
    text: str
    source_ids: list[str]
    created_at: datetime
    superseded_by: str | None = None


class MemoryUpdate(Strict):
    text: str = Field(min_length=1, max_length=4_000)

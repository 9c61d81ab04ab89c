"""Conversations: sessions per (user, character), their message trees, prompt assembly and
the reply path (`ChatService`).  Talks to the engine through its public types and to
memory through the small `MemoryRecall` protocol; knows nothing of HTTP.
"""

from limelight.chat.persona import USER_NAME, Persona, persona
from limelight.chat.prompt import Prompt, PromptParts, PromptTooLong, Turn, build_prompt
from limelight.chat.service import (
    REPLY_DEFAULTS,
    ChatService,
    Delta,
    Done,
    MemoryRecall,
    ReplyEvent,
    Usage,
    ensure_user,
)
from limelight.chat.tree import ChatError

__all__ = [
    "REPLY_DEFAULTS",
    "USER_NAME",
    "ChatError",
    "ChatService",
    "Delta",
    "Done",
    "MemoryRecall",
    "Persona",
    "Prompt",
    "PromptParts",
    "PromptTooLong",
    "ReplyEvent",
    "Turn",
    "Usage",
    "build_prompt",
    "ensure_user",
    "persona",
]

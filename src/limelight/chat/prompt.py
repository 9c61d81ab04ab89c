"""Prompt assembly: the prefix-friendly layout, rendered with the model's chat template.

The order runs from the most shared to the most volatile (ARCHITECTURE.md), so that the
engine's prefix cache serves the character to every user and the conversation to every
turn:

    system:  character definition          identical for every user of the character
             + this user and session       frozen profile summary, constant lore
    history: the conversation so far       append-only, oldest dropped first
    user:    retrieved for this turn       memories, triggered lore
             + the new message
             + post-history instructions

What was retrieved for a message stays with it (`Turn.context`): later prompts show each
past user turn as it was sent, so the prompt grows append-only and a new turn computes
only its own tokens (and the reply before it), not the history after an old retrieval.

Budgeting drops the oldest history first, and drops it in one go down to `LOW_WATER` of
the room, so that the cut stays put (and the cache stays warm) for the turns after it.
The character definition is never cut: if it cannot fit, `PromptTooLong` says by how much.
Owns no storage and no generation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from jinja2 import TemplateError

LOW_WATER = 0.7  # after a cut, the prompt fills at most this share of its room


class PromptTooLong(ValueError):
    """What never may be cut (the character, the new message) does not fit the context."""


@dataclass(slots=True)
class Turn:
    role: str  # "user" | "assistant"
    content: str
    id: str | None = None  # the stored message's id, when it has one
    context: str = ""  # a user turn's retrieved text, shown before it as when it was sent

    @property
    def shown(self) -> str:
        return "\n\n".join(p for p in (self.context, self.content) if p)


@dataclass(slots=True)
class PromptParts:
    definition: str  # the character: identical for every user
    stable: str = ""  # this user and session: profile summary, constant lore
    history: list[Turn] = field(default_factory=list)  # oldest first
    retrieved: str = ""  # memories and lore found for this turn
    message: str = ""  # the new user message
    instructions: str = ""  # post-history instructions, last


@dataclass(slots=True)
class Prompt:
    text: str
    num_tokens: int
    num_dropped: int  # oldest history turns left out
    first_turn_id: str | None  # the oldest turn kept (the session remembers the cut)
    retrieved: str  # what was retrieved for this turn and is in the prompt


Render = Callable[[list[dict[str, str]]], str]
Count = Callable[[str], int]


def chat_messages(parts: PromptParts) -> list[dict[str, str]]:
    system = "\n\n".join(p for p in (parts.definition, parts.stable) if p)
    final = "\n\n".join(p for p in (parts.retrieved, parts.message, parts.instructions) if p)
    messages = [{"role": "system", "content": system}]
    messages += [{"role": t.role, "content": t.shown} for t in parts.history]
    messages.append({"role": "user", "content": final})
    return _merge_same_roles(messages)


def render(parts: PromptParts, template: Render) -> str:
    """Render with the chat template; a template that insists on user-first turns gets one."""
    messages = chat_messages(parts)
    try:
        return template(messages)
    except TemplateError:
        if len(messages) < 2 or messages[1]["role"] != "assistant":
            raise
        opener = {"role": "user", "content": "(The conversation begins.)"}
        return template([messages[0], opener, *messages[1:]])


def build_prompt(parts: PromptParts, template: Render, count: Count, room: int) -> Prompt:
    """Fit `parts` into `room` tokens, dropping the oldest history and then retrievals."""
    text = render(parts, template)
    size = count(text)
    if size <= room:
        return _prompt(parts, text, size, 0)
    keep = _history_that_fits(parts, template, count, int(room * LOW_WATER))
    trimmed = _with_history(parts, parts.history[len(parts.history) - keep :])
    if keep == 0 and count(render(trimmed, template)) > room:
        trimmed.retrieved = ""  # what was retrieved goes before the character would
    text = render(trimmed, template)
    size = count(text)
    if size > room:
        raise PromptTooLong(_too_long(parts, count, size, room))
    return _prompt(trimmed, text, size, len(parts.history) - keep)


def _history_that_fits(parts: PromptParts, template: Render, count: Count, room: int) -> int:
    """The most recent turns (how many) that fit in `room`, by bisection over renders."""
    low, high = 0, len(parts.history)
    while low < high:
        mid = (low + high + 1) // 2
        kept = _with_history(parts, parts.history[len(parts.history) - mid :])
        if count(render(kept, template)) <= room:
            low = mid
        else:
            high = mid - 1
    return low


def _with_history(parts: PromptParts, history: list[Turn]) -> PromptParts:
    return PromptParts(
        parts.definition,
        parts.stable,
        list(history),
        parts.retrieved,
        parts.message,
        parts.instructions,
    )


def _prompt(parts: PromptParts, text: str, size: int, dropped: int) -> Prompt:
    first = parts.history[0].id if parts.history else None
    return Prompt(
        text=text,
        num_tokens=size,
        num_dropped=dropped,
        first_turn_id=first,
        retrieved=parts.retrieved,
    )


def _too_long(parts: PromptParts, count: Count, size: int, room: int) -> str:
    return (
        f"the prompt needs {size} tokens but the model leaves room for {room}: the character "
        f"definition alone is {count(parts.definition)} tokens and the new message "
        f"{count(parts.message)}; shorten them, lower max_tokens or use a longer context"
    )


def _merge_same_roles(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Two turns in a row from one role (a deleted reply, a greeting pair) become one."""
    merged: list[dict[str, str]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {
                **merged[-1],
                "content": f"{merged[-1]['content']}\n\n{message['content']}",
            }
        else:
            merged.append(dict(message))
    return merged

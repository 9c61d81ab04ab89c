"""The rolling summary: a short profile of the user and the relationship, kept up to date.

`update_summary(generate, previous, user_text, reply, character_name)` gives the model the
previous summary and the latest exchange and asks for the new summary as
`{"summary": "..."}` under `SUMMARY_SCHEMA`, whose `maxLength` bounds it (`MAX_CHARS`), so
the summary stays the same small, stable block at the top of every prompt.  An exchange
with nothing new should give back the previous summary.  Nothing here stores it.
"""

from __future__ import annotations

from typing import Any

from limelight.engine.types import Constraint, SamplingParams
from limelight.memory.prompting import Generate, Messages, parse_json_object, require_str

MAX_CHARS = 600
SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"summary": {"type": "string", "maxLength": MAX_CHARS}},
    "required": ["summary"],
    "additionalProperties": False,
}
MAX_TOKENS = MAX_CHARS // 3 + 16  # ~4 characters a token, with room to spare

_SYSTEM = """You keep a short summary of what {character} knows about {user} and of their \
relationship: who {user} is, what matters to them, what happened between them, and \
anything promised.  Update the summary with the new exchange: keep what still holds, \
correct what changed, add what is new and lasting, drop small talk.  At most {max_chars} \
characters, plain sentences.  Answer with JSON only: {{"summary": "..."}}."""


def summary_messages(
    previous: str, user_text: str, reply: str, character_name: str, user_name: str
) -> Messages:
    system = _SYSTEM.format(character=character_name, user=user_name, max_chars=MAX_CHARS)
    content = (
        f"Summary so far: {previous.strip() or '(none yet)'}\n\nNew exchange:\n"
        f"{user_name}: {user_text.strip()}\n{character_name}: {reply.strip()}"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": content}]


def summary_params() -> SamplingParams:
    return SamplingParams(
        temperature=0, max_tokens=MAX_TOKENS, constraint=Constraint.json_schema(SUMMARY_SCHEMA)
    )


def update_summary(
    generate: Generate,
    previous: str,
    user_text: str,
    reply: str,
    character_name: str,
    user_name: str = "User",
) -> str:
    """The new summary (at most `MAX_CHARS`); the previous one if the model gives nothing."""
    messages = summary_messages(previous, user_text, reply, character_name, user_name)
    value = parse_json_object(generate(messages, summary_params()), "summary")
    summary = require_str(value, "summary", "summary")[:MAX_CHARS]
    return summary or previous

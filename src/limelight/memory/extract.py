"""Facts from an exchange, by a model under a JSON schema, and which old facts they replace.

`extract_facts(generate, user_text, reply, character_name)` asks the model for lasting
facts about the user (and what the character committed to) as
`{"facts": [{"subject", "attribute", "value", "text"}, ...]}`, constrained by
`FACT_SCHEMA` so that even a 135M model returns valid structure; `parse_facts` checks it
again.  A fact's `key` is its normalised (subject, attribute): attributes are single-valued
by convention (the prompt asks for "favourite colour", not "likes"), so `reconcile_fact`
can tell, without another model call, whether a new fact repeats a stored one or
supersedes those with the same key and another value.

Nothing here stores facts or decides when extraction runs (that is the service's).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from limelight.engine.types import Constraint, SamplingParams
from limelight.memory.prompting import (
    ExtractionError,
    Generate,
    Messages,
    parse_json_object,
    require_str,
)
from limelight.memory.types import MemoryItem

MAX_FACTS = 3
FACT_PREFIX = "fact:"
_LIMITS = {"subject": 40, "attribute": 40, "value": 80, "text": 160}  # characters
FACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array",
            "maxItems": MAX_FACTS,
            "items": {
                "type": "object",
                "properties": {
                    name: {"type": "string", "minLength": 1, "maxLength": limit}
                    for name, limit in _LIMITS.items()
                },
                "required": list(_LIMITS),
                "additionalProperties": False,
            },
        }
    },
    "required": ["facts"],
    "additionalProperties": False,
}
# Room for MAX_FACTS facts at their longest (~4 characters a token) and the JSON around them
MAX_TOKENS = MAX_FACTS * (sum(_LIMITS.values()) // 3 + 24) + 16

_SYSTEM = """You keep the long-term memory of {character}, a character talking with {user}.
From the exchange below, list at most {max_facts} lasting facts worth remembering in later \
conversations: who {user} is, their life, people, pets, plans, likes and dislikes, and \
anything {character} promised.  Skip greetings, small talk and passing moods.
Each fact has a subject (a person's name: {user}, {character} or someone they mention), \
an attribute with one value (for example "favourite food", "sister's name", "job"), the \
value, and a short sentence stating it.  Answer with JSON only; {{"facts": []}} if there \
is nothing lasting."""


@dataclass(frozen=True, slots=True)
class Fact:
    subject: str
    attribute: str
    value: str
    text: str

    @property
    def key(self) -> str:
        """`subject: attribute`, normalised, the identity two versions of a fact share."""
        return f"{_normalise(self.subject)}: {_normalise(self.attribute)}"

    def to_item(self, item_id: str, source_ids: Sequence[str], created_at: datetime) -> MemoryItem:
        return MemoryItem(
            id=item_id,
            kind="fact",
            text=self.text,
            source_ids=tuple(source_ids),
            created_at=created_at,
            about=(self.subject,),
        )


@dataclass(frozen=True, slots=True)
class FactUpdate:
    """What storing a new fact means, given the stored facts (by id)."""

    duplicate_of: str | None  # a stored fact already says this: store nothing
    supersedes: tuple[str, ...]  # stored facts with the same key and another value


def fact_messages(user_text: str, reply: str, character_name: str, user_name: str) -> Messages:
    system = _SYSTEM.format(character=character_name, user=user_name, max_facts=MAX_FACTS)
    exchange = f"{user_name}: {user_text.strip()}\n{character_name}: {reply.strip()}"
    return [{"role": "system", "content": system}, {"role": "user", "content": exchange}]


def fact_params(max_tokens: int = MAX_TOKENS) -> SamplingParams:
    return SamplingParams(
        temperature=0, max_tokens=max_tokens, constraint=Constraint.json_schema(FACT_SCHEMA)
    )


def extract_facts(
    generate: Generate,
    user_text: str,
    reply: str,
    character_name: str,
    user_name: str = "User",
) -> list[Fact]:
    """Ask the model for the lasting facts of one exchange (raises `ExtractionError`)."""
    messages = fact_messages(user_text, reply, character_name, user_name)
    return parse_facts(generate(messages, fact_params()))


def parse_facts(text: str) -> list[Fact]:
    """The facts of a model output that `FACT_SCHEMA` describes; blank facts dropped."""
    value = parse_json_object(text, "fact list")
    raw = value.get("facts")
    if not isinstance(raw, list):
        raise ExtractionError(f"the model's fact list has no 'facts' array: {text[:200]!r}")
    facts = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise ExtractionError(f"a fact is not a JSON object: {entry!r}")
        fields = {name: require_str(entry, name, "fact") for name in _LIMITS}
        if all(fields.values()):
            facts.append(Fact(**fields))
    return facts


def reconcile_fact(new: Fact, stored: Mapping[str, Fact]) -> FactUpdate:
    """Compare a new fact with stored ones: a repeat, or which ones it supersedes."""
    same_key = {fact_id: old for fact_id, old in stored.items() if old.key == new.key}
    for fact_id, old in same_key.items():
        if _normalise(old.value) == _normalise(new.value):
            return FactUpdate(duplicate_of=fact_id, supersedes=())
    return FactUpdate(duplicate_of=None, supersedes=tuple(same_key))


def _normalise(text: str) -> str:
    """Lowercase words only: "Favourite Food", "favourite_food " → "favourite food"."""
    return " ".join(re.findall(r"[^\W_]+", text.lower()))

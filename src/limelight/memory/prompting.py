"""How memory asks a model for structure: the `Generate` callable and its adapters.

Memory writing (facts, summaries) builds chat messages and sampling parameters (with a JSON
schema constraint) and hands them to a `Generate`: any callable from (messages, params) to
the output text.  `llm_generate` makes one from a synchronous `LLM`; the service makes one
that runs on its `AsyncEngine`; tests pass a fake.  `parse_json_object` turns the output
into a dict or raises `ExtractionError`, a typed error the service records with the job.
Nothing here knows which memories exist or how they are stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from limelight.engine.errors import LimelightError
from limelight.engine.types import SamplingParams

if TYPE_CHECKING:
    from limelight.engine.llm import LLM

Messages = list[dict[str, str]]
Generate = Callable[[Messages, SamplingParams], str]


class ExtractionError(LimelightError, ValueError):
    """A model's output is not the structure asked for (truncated or malformed JSON)."""


def llm_generate(llm: LLM) -> Generate:
    """A `Generate` that renders the model's chat template and runs `llm.generate`."""

    def generate(messages: Messages, params: SamplingParams) -> str:
        return llm.generate(llm.apply_chat_template(messages), params)[0].text

    return generate


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ExtractionError(
            f"the model's {what} is not valid JSON ({err.msg} at {err.pos}); raise max_tokens "
            f"if it was cut off: {text[:200]!r}"
        ) from err
    if not isinstance(value, dict):
        raise ExtractionError(f"the model's {what} is not a JSON object: {text[:200]!r}")
    return value


def require_str(value: dict[str, Any], key: str, what: str) -> str:
    field = value.get(key)
    if not isinstance(field, str):
        raise ExtractionError(f"the model's {what} lacks the string field {key!r}: {value!r}")
    return field.strip()

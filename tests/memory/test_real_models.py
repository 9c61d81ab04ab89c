"""Fact extraction and the summary with the packaged SmolLM2-135M-Instruct: whatever a
135M model says, the constrained output parses and validates against the schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from limelight import LLM
from limelight.memory import extract_facts, llm_generate, update_summary
from limelight.memory.extract import FACT_SCHEMA, fact_messages, fact_params
from limelight.memory.summary import MAX_CHARS, SUMMARY_SCHEMA, summary_messages, summary_params

pytestmark = pytest.mark.slow

USER = "I just moved to Lyon for my new job as a nurse, and my dog Bella loves the parks here."
REPLY = "Lyon! That's wonderful. Give Bella a scratch behind the ears from me."


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM("smollm2-135m-instruct")


def test_facts_from_the_packaged_model_validate(llm: LLM) -> None:
    generate = llm_generate(llm)
    raw = generate(fact_messages(USER, REPLY, "Ava", "Sam"), fact_params())
    jsonschema.validate(json.loads(raw), FACT_SCHEMA)
    facts = extract_facts(generate, USER, REPLY, "Ava", "Sam")
    assert all(f.subject and f.attribute and f.value and f.text for f in facts)


def test_summary_from_the_packaged_model_validates(llm: LLM) -> None:
    generate = llm_generate(llm)
    raw = generate(summary_messages("", USER, REPLY, "Ava", "Sam"), summary_params())
    jsonschema.validate(json.loads(raw), SUMMARY_SCHEMA)
    summary = update_summary(generate, "Sam is new in town.", USER, REPLY, "Ava", "Sam")
    assert 0 < len(summary) <= MAX_CHARS

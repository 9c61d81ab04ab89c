"""Fact extraction and the rolling summary with a scripted model; the contradiction check."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from limelight.memory import (
    ExtractionError,
    Fact,
    extract_facts,
    reconcile_fact,
    update_summary,
)
from limelight.memory.extract import FACT_SCHEMA, MAX_TOKENS, parse_facts
from limelight.memory.summary import MAX_CHARS, SUMMARY_SCHEMA
from tests.memory.fakes import ScriptedGenerate

BELLA = {
    "subject": "Sam",
    "attribute": "dog's name",
    "value": "Bella",
    "text": "Sam's dog is called Bella.",
}


def test_extract_asks_under_the_schema_and_parses_the_facts() -> None:
    generate = ScriptedGenerate(json.dumps({"facts": [BELLA]}))
    facts = extract_facts(generate, "My dog Bella chewed my shoes!", "Oh no, Bella!", "Ava", "Sam")
    assert facts == [Fact(**BELLA)]
    messages, params = generate.calls[0]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "Ava" in messages[0]["content"] and "Sam" in messages[0]["content"]
    assert messages[1]["content"] == "Sam: My dog Bella chewed my shoes!\nAva: Oh no, Bella!"
    assert params.temperature == 0 and params.max_tokens == MAX_TOKENS
    assert params.constraint is not None and params.constraint.value == FACT_SCHEMA


def test_parse_drops_blank_facts_and_refuses_bad_structure() -> None:
    blank = {**BELLA, "value": " "}
    assert parse_facts(json.dumps({"facts": [BELLA, blank]})) == [Fact(**BELLA)]
    assert parse_facts('{"facts": []}') == []
    with pytest.raises(ExtractionError, match="not valid JSON"):
        parse_facts('{"facts": [{"subject": "Sam", "attr')  # cut off by max_tokens
    with pytest.raises(ExtractionError, match="'facts' array"):
        parse_facts('{"fact": []}')
    with pytest.raises(ExtractionError, match="'value'"):
        parse_facts(json.dumps({"facts": [{"subject": "a", "attribute": "b", "text": "c"}]}))


def test_reconcile_finds_repeats_and_supersessions() -> None:
    stored = {
        "f1": Fact("Sam", "Dog's name", "bella", "Sam's dog is Bella."),
        "f2": Fact("Sam", "job", "nurse", "Sam is a nurse."),
        "f3": Fact("Ava", "dog's name", "Rex", "Ava's dog is Rex."),
    }
    same = reconcile_fact(Fact("sam", "dog's  name", "Bella!", "Sam has Bella."), stored)
    assert same.duplicate_of == "f1" and same.supersedes == ()
    moved = reconcile_fact(Fact("Sam", "job", "teacher", "Sam now teaches."), stored)
    assert moved.duplicate_of is None and moved.supersedes == ("f2",)
    new = reconcile_fact(Fact("Sam", "city", "Lyon", "Sam lives in Lyon."), stored)
    assert new.duplicate_of is None and new.supersedes == ()


def test_fact_becomes_a_memory_item_about_its_subject() -> None:
    when = datetime(2024, 3, 1)
    item = Fact(**BELLA).to_item("fact:1", ["m1", "m2"], when)
    assert (item.kind, item.text, item.about) == ("fact", BELLA["text"], ("Sam",))
    assert item.source_ids == ("m1", "m2") and item.created_at == when
    assert Fact(**BELLA).key == "sam: dog s name"


def test_summary_update_is_bounded_and_keeps_the_old_one_when_empty() -> None:
    generate = ScriptedGenerate(
        json.dumps({"summary": "Sam has a dog, Bella. " * 60}), '{"summary": ""}'
    )
    summary = update_summary(generate, "Sam is a nurse.", "I got a dog!", "Yay!", "Ava", "Sam")
    assert len(summary) == MAX_CHARS and summary.startswith("Sam has a dog")
    messages, params = generate.calls[0]
    assert "Summary so far: Sam is a nurse." in messages[1]["content"]
    assert params.constraint is not None and params.constraint.value == SUMMARY_SCHEMA
    assert update_summary(generate, "Sam is a nurse.", "ok", "ok", "Ava") == "Sam is a nurse."
    with pytest.raises(ExtractionError, match="summary"):
        update_summary(ScriptedGenerate("[]"), "", "hi", "hello", "Ava")

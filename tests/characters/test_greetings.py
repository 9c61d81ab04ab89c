"""Greetings: first message plus alternates (and group-only ones), macros expanded."""

from __future__ import annotations

import random
from pathlib import Path

from limelight.characters import CharacterCard, MacroContext, greetings, read_card_file


def ctx() -> MacroContext:
    return MacroContext(user="Ann", char="Bo", rng=random.Random(0))


def test_first_message_then_alternates_then_group_only() -> None:
    card = CharacterCard(
        name="Bo",
        first_mes="Hello {{user}}.",
        alternate_greetings=["<BOT> waves.", "  ", "{{// note}}Hey."],
        group_only_greetings=["Hello everyone, I'm {{char}}."],
    )
    assert greetings(card, ctx()) == ["Hello Ann.", "Bo waves.", "Hey."]
    assert greetings(card, ctx(), in_group=True)[-1] == "Hello everyone, I'm Bo."


def test_no_first_message() -> None:
    assert greetings(CharacterCard(name="Bo"), ctx()) == []
    card = CharacterCard(name="Bo", alternate_greetings=["Only this."])
    assert greetings(card, ctx()) == ["Only this."]


def test_real_card_greetings(shared_data: Path) -> None:
    data = (shared_data / "cards" / "choral_Default-chan.png").read_bytes()
    card = read_card_file(data).card
    texts = greetings(card, MacroContext(user="Ann", char=card.name))
    assert len(texts) == 3  # first message + 2 alternates (MANIFEST)
    assert all("{{char}}" not in t and "{{user}}" not in t for t in texts)

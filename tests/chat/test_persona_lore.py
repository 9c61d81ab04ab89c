"""A character as the prompt sees it (`chat/persona.py`) and its lore slots (`chat/lore.py`):
the definition is one text for every user, greetings keep their order, constant lore goes
to the stable part and keyed lore only to the turns that mention its keys."""

from __future__ import annotations

from limelight.characters import CharacterCard, Lorebook, LoreEntry
from limelight.chat.lore import DEFAULT_BUDGET, lore_sections
from limelight.chat.persona import DEFAULT_SYSTEM, USER_NAME, persona


def count(text: str) -> int:
    return len(text.split())


CARD = CharacterCard(
    name="Ada",
    description="{{char}} repairs clocks for {{user}}. Today: {{random:tea,coffee,cocoa}}.",
    personality="patient",
    scenario="A workshop.",
    first_mes="Welcome, {{user}}.",
    alternate_greetings=["  ", "Back again, {{user}}?"],
    mes_example="<START>\n{{user}}: Hi\n{{char}}: Hello\n<START>\n{{user}}: Bye",
    post_history_instructions="Stay terse, {{char}}.",
)


def test_the_definition_is_the_same_text_for_everyone() -> None:
    ada = persona("ada", CARD)
    assert ada.definition == persona("ada", CARD).definition  # {{random}} seeded by the slug
    assert "{{" not in ada.definition and "Ada repairs clocks for User" in ada.definition
    sections = ada.definition.split("\n\n")
    assert sections[0] == DEFAULT_SYSTEM.replace("{{char}}", "Ada").replace("{{user}}", USER_NAME)
    assert "Ada's personality: patient" in sections and "Scenario: A workshop." in sections
    assert "Example dialogue:\nUser: Hi\nAda: Hello\n\nUser: Bye" in ada.definition
    assert ada.post_history == "Stay terse, Ada."


def test_greetings_keep_their_order_and_drop_blank_ones() -> None:
    ada = persona("ada", CARD)
    assert ada.greetings == ["Welcome, {{user}}.", "Back again, {{user}}?"]  # drawn per session
    assert [ada.macros(g, "seed") for g in ada.greetings] == ["Welcome, User.", "Back again, User?"]


def test_a_card_system_prompt_replaces_the_default() -> None:
    card = CharacterCard(name="Bo", system_prompt="Play {{char}} well.")
    assert persona("bo", card).definition == "Play Bo well."


BOOK = Lorebook(
    entries=[
        LoreEntry(keys=[], content="The city is Brass.", constant=True),
        LoreEntry(keys=["dragon"], content="Dragons are extinct."),
        LoreEntry(keys=["river"], content="The river runs uphill."),
    ]
)


def test_no_book_no_lore() -> None:
    assert lore_sections(None, ["dragon"], count) == ("", "")
    assert lore_sections(Lorebook(), ["dragon"], count) == ("", "")


def test_constant_lore_is_stable_and_keyed_lore_follows_the_chat() -> None:
    assert lore_sections(BOOK, ["Hello."], count) == ("The city is Brass.", "")
    constant, triggered = lore_sections(BOOK, ["Tell me of the dragon and the river."], count)
    assert constant == "The city is Brass."
    assert triggered == "Dragons are extinct.\nThe river runs uphill."


def test_a_book_without_a_budget_gets_the_default_one() -> None:
    huge = LoreEntry(keys=["dragon"], content="word " * (DEFAULT_BUDGET + 10))
    _, triggered = lore_sections(Lorebook(entries=[huge]), ["a dragon"], count)
    assert triggered == ""  # over the default budget
    roomy = Lorebook(entries=[huge], token_budget=DEFAULT_BUDGET * 2)
    _, triggered = lore_sections(roomy, ["a dragon"], count)
    assert count(triggered) == DEFAULT_BUDGET + 10  # the book's own budget wins

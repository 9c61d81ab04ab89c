"""speakable: roleplay actions and markdown are not read aloud; the words around them are."""

from __future__ import annotations

import pytest

from limelight.voice import speakable
from limelight.voice.markup import is_inside_markup


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("*smiles* Hello there!", "Hello there!"),
        ("Hello. *She leans in, whispering.* Come closer.", "Hello. Come closer."),
        ("Hello **world**, how _are_ you?", "Hello world, how are you?"),
        ("It's ~~not~~ fine, `really`.", "It's not fine, really."),
        (
            "# Packing list\n- boots\n* rope\n1. water\n> quoted",
            "Packing list boots rope water quoted",
        ),
        ("See [the docs](https://example.com) now 😀!", "See the docs now!"),
        ("Run this:\n```python\nprint('hi')\n```\nDone.", "Run this: Done."),
        ("Then:\n```\nunfinished code", "Then:"),
        ("5 * 3 = 15", "5 3 = 15"),  # a lone asterisk opens no action
        ("what the f*ck", "what the fck"),  # nor does one inside a word
        ("snake_case stays", "snake_case stays"),
        ("*waves, then never closes", ""),
        ('*She turns.* "Come in." *sits*', '"Come in."'),
        ('*She turns and says, "Come in, please." Then she sits.*', "Come in, please."),
        ("*He nods: “Yes.” and “Go.” He leaves", "Yes. Go."),  # unclosed: to the end
        ('*She says, "Come in', ""),  # an unclosed quote is not yet speech
        ("*She sits.\n*Tea arrives.\n\nWe talked. *nods", "We talked."),  # to a blank line
        ("*smiles\n\nHello *waves*", "Hello"),
        ("Sure! *nods*", "Sure!"),
        ("Line one\n\n---\n\nLine two", "Line one Line two"),
        ("*sigh* ... *shrugs*", ""),  # punctuation alone is nothing to say
        ("", ""),
    ],
)
def test_speakable(text: str, spoken: str) -> None:
    assert speakable(text) == spoken


@pytest.mark.parametrize(
    ("text", "inside"),
    [
        ("*smiles", True),
        ("*smiles*", False),
        ("*smiles* and *waves", True),
        ("*sits.\n*Tea arrives.\n\nWe talked", False),  # that action ended with its paragraph
        ("We talked.\n\n*sits and", True),
        ("**bold", False),  # bold is read, so cutting inside it is fine
        ("5 * 3", False),
        ("Code: ```py\nx = 1", True),
        ("Code: ```py\nx = 1\n```", False),
        ("- a list item", False),
    ],
)
def test_is_inside_markup(text: str, inside: bool) -> None:
    assert is_inside_markup(text) is inside

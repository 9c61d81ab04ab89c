"""SentenceSplitter: hand-worked cuts, deltas that split words and punctuation, and the
same pieces however the text is chunked."""

from __future__ import annotations

import random

import pytest

from limelight.voice import SentenceSplitter, speakable


def stream(deltas: list[str], **options: int) -> list[list[str]]:
    """What each push returned, then what flush returned (as the last entry)."""
    splitter = SentenceSplitter(**options)
    return [splitter.push(delta) for delta in deltas] + [splitter.flush()]


def pieces(text: str, **options: int) -> list[str]:
    """All pieces of `text` fed one character at a time."""
    return [piece for batch in stream(list(text), **options) for piece in batch]


def test_deltas_that_split_words_and_punctuation() -> None:
    assert stream(["Hel", "lo. Wor", "ld!"]) == [[], ["Hello."], [], ["World!"]]
    assert stream(["Hello", ".", " ", "How", " are you?", "\n"]) == [
        [], [], [], ["Hello."], [], ["How are you?"], [],
    ]  # fmt: skip


def test_a_full_stop_waits_for_the_next_word() -> None:
    # "Dr." or "3." could still become "Dr. Smith" or "3.5": nothing is cut until it shows
    assert stream(["I met Dr.", " ", "Smith."]) == [[], [], [], ["I met Dr. Smith."]]
    assert stream(["It is 3.", "5 today."]) == [[], [], ["It is 3.5 today."]]
    assert stream(["Yes.", " No."]) == [[], ["Yes."], ["No."]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi! How are you? Fine.", ["Hi!", "How are you?", "Fine."]),
        ("Mr. and Mrs. Smith met Dr. Jones on Elm St. today.", None),
        ("I have e.g. apples. And i.e. pears.", ["I have e.g. apples.", "And i.e. pears."]),
        ("J. R. R. Tolkien wrote it. Read it.", ["J. R. R. Tolkien wrote it.", "Read it."]),
        ("It costs 3.50 now. The sum is 3,000.", ["It costs 3.50 now.", "The sum is 3,000."]),
        (
            '"Really?" she asked. "Yes!" He nodded.',
            ['"Really?" she asked.', '"Yes!"', "He nodded."],
        ),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        ("Wait?! What?!", ["Wait?!", "What?!"]),
        ("Well... maybe not. Hmm... I see.", ["Well... maybe not.", "Hmm...", "I see."]),
        ("Wait… What was that?", ["Wait…", "What was that?"]),
        ("Meet me at 5 p.m. tomorrow. Bye.", ["Meet me at 5 p.m. tomorrow.", "Bye."]),
        (
            "We sold apples, pears etc. Then we left.",
            ["We sold apples, pears etc.", "Then we left."],
        ),
        ("No. 5 is mine.", None),
        (
            "First line\nsecond line\n\nNew paragraph",
            ["First line", "second line", "New paragraph"],
        ),
        ("Steps:\n1. Pack.\n2. Go.", ["Steps:", "Pack.", "Go."]),
        ("No punctuation at the end", None),
    ],
)
def test_sentence_ends(text: str, expected: list[str] | None) -> None:
    assert pieces(text, first_min_words=99) == (expected if expected is not None else [text])


def test_the_first_piece_may_end_at_a_clause_once_it_has_enough_words() -> None:
    text = "Well, I have been thinking about it all day, and I think we should go. Yes, we should."
    assert pieces(text) == [
        "Well, I have been thinking about it all day,",  # "Well," alone is one word
        "and I think we should go.",
        "Yes, we should.",  # later pieces are whole sentences
    ]
    assert (
        pieces(text, first_min_words=20)[0]
        == "Well, I have been thinking about it all day, and I think we should go."
    )
    assert pieces("One two three four five six; seven.") == [
        "One two three four five six;",
        "seven.",
    ]
    assert pieces("One two three four five six: seven.")[0].endswith(":")
    assert pieces("One two three four five six — seven.") == [
        "One two three four five six —",
        "seven.",
    ]
    assert pieces("One two three four five six 3,000 seven.") == [
        "One two three four five six 3,000 seven."
    ]


def test_a_long_sentence_is_cut_at_a_clause_boundary() -> None:
    clause = "the rain kept falling on the roofs of the old town"
    text = "It rained. The " + ", ".join([clause] * 8)[4:] + "."
    result = pieces(text)
    assert result[0] == "It rained."
    assert all(len(piece) <= 200 for piece in result)
    assert all(piece.endswith((",", ".")) for piece in result)  # cut after commas only
    assert " ".join(result) == text
    assert len(result) == 1 + 3  # 8 clauses of 52 characters: 3 fit in 200


def test_a_long_sentence_without_clauses_is_cut_between_words() -> None:
    text = "Go. Word " + " ".join(["word"] * 100) + "."
    result = pieces(text)
    assert result[0] == "Go." and all(len(piece) <= 200 for piece in result)
    assert " ".join(result) == text


def test_actions_and_markdown_are_not_read() -> None:
    text = "*smiles warmly* Hello there! *She pours the tea. Then sits.* **Sit** down, please."
    assert pieces(text) == ["Hello there!", "Sit down, please."]
    assert pieces("*waves* *nods*") == []  # nothing left to say: dropped
    assert pieces("Okay. *leaves without a word") == ["Okay."]  # unclosed at the end
    assert pieces("# Plan\n- **Boots**\n- Rope") == ["Plan", "Boots", "Rope"]


def test_no_cut_inside_an_action_or_code() -> None:
    # sentence ends inside the action would otherwise make "Then." a piece of its own
    assert stream(["*She sighs. ", "Then.", "* Fine. "]) == [[], [], [], ["Fine."]]
    assert pieces("Try:\n```\na = 1\nb = 2\n```\nDone.") == ["Try:", "Done."]


def test_an_action_left_open_ends_with_its_paragraph() -> None:
    # a model that opens an action per line and never closes one (seen in bench e2e)
    deltas = ["*She sits.\n*Tea", " arrives.\n\nWe talked", " at noon. And", " then left."]
    assert stream(deltas) == [[], [], ["We talked at noon."], [], ["And then left."]]


def test_a_word_count_for_the_early_cut_ignores_actions() -> None:
    text = "*leans back in the creaky old chair* Well, maybe, I suppose, it could work, yes."
    assert pieces(text) == ["Well, maybe, I suppose,", "it could work, yes."]


def test_flush_resets_for_the_next_reply() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("One two three four five six, seven. Eight") == [
        "One two three four five six,", "seven.",
    ]  # fmt: skip
    assert splitter.flush() == ["Eight"]
    assert splitter.flush() == []
    # a fresh reply's first piece may be cut early again
    assert splitter.push("Alpha beta gamma delta epsilon zeta, eta ") == [
        "Alpha beta gamma delta epsilon zeta,"
    ]


REPLIES = (
    "Hello! I'm Lumi. *waves* What shall we do today, e.g. plan a trip or write a poem?",
    'Dr. Vale said 3.5 cups... not 3. "Odd," I said. Then:\n- flour\n- **sugar**\n\nDone!',
    "A long one, " + "with many clauses, " * 20 + "and an end. Short. *sigh*",
)


@pytest.mark.parametrize("text", REPLIES)
def test_chunking_does_not_change_the_pieces(text: str) -> None:
    """The reference: the whole reply in one push.  Any chunking must give the same pieces,
    and together they say what the reply says."""
    whole = stream([text])
    reference = [piece for batch in whole for piece in batch]
    rng = random.Random(7)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(text)), k=rng.randint(1, len(text) // 3)))
        deltas = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert [piece for batch in stream(deltas) for piece in batch] == reference
    assert " ".join(reference) == speakable(text)

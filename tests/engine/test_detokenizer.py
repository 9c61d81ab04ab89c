"""The incremental detokenizer fed one byte token at a time, checked against a naive reference.

The reference decodes all bytes so far, keeps the complete characters, cuts at the earliest
stop string, and otherwise holds back the longest tail that could still begin one.
"""

import pytest

from limelight.engine.detokenizer import REPLACEMENT, IncrementalDetokenizer
from tests.engine.fakes import ByteTokenizer

TOKENIZER = ByteTokenizer()
MULTIBYTE = "café, 中文 and a mask 🎭! é🎭中 done"


def complete_prefix(data: bytes) -> str:
    """The characters whose bytes have all arrived (the input is valid UTF-8)."""
    return data.decode(errors="ignore")  # drops only the incomplete tail


def naive_visible(data: bytes, stop: list[str]) -> str:
    """What may be shown after `data`: never a stop string, nor text that may become one."""
    text = complete_prefix(data)
    hits = [text.find(s) for s in stop if s in text]
    if hits:
        return text[: min(hits)]
    held = max(
        (n for s in stop for n in range(1, len(s)) if text.endswith(s[:n])),
        default=0,
    )
    return text[: len(text) - held]


def feed(text: str, stop: list[str]) -> tuple[IncrementalDetokenizer, list[str], list[str]]:
    """Feed `text` token by token; return the detokenizer, its pieces and the references."""
    detok = IncrementalDetokenizer(TOKENIZER, stop)
    data, pieces, shown = text.encode(), [], []
    for i, token in enumerate(TOKENIZER.encode(text)):
        pieces.append(detok.add([token]))
        shown.append(naive_visible(data[: i + 1], stop))
        if detok.stopped:
            break
    return detok, pieces, shown


def test_multibyte_text_streams_without_replacement_characters() -> None:
    detok, pieces, shown = feed(MULTIBYTE, [])
    assert len(TOKENIZER.encode(MULTIBYTE)) > len(MULTIBYTE)  # characters do span tokens
    assert all(REPLACEMENT not in piece for piece in pieces)
    assert "".join(pieces) == MULTIBYTE == detok.output_text
    # and each character appears as soon as its last byte arrives
    assert ["".join(pieces[: i + 1]) for i in range(len(pieces))] == shown
    assert detok.add([], final=True) == ""


def test_several_tokens_at_once_hold_an_incomplete_character_until_it_completes() -> None:
    ids = TOKENIZER.encode("a中b")  # a, 3 bytes of 中, b
    detok = IncrementalDetokenizer(TOKENIZER, [])
    first = detok.add(ids[:3])
    assert first in ("", "a")  # "a" may wait for the character after it, never garble it
    assert first + detok.add(ids[3:4]) == "a中"
    assert detok.add(ids[4:]) == "b"


STOP_CASES = [
    ("hello END world", ["END"]),  # spans three tokens
    ("ab abc abcd", ["abcd"]),  # two false starts are held back, then released
    ("aaab", ["aab"]),  # overlapping false start
    ("say 中文 now", ["中文"]),  # begins with a character split over three tokens
    ("café! more", ["é!"]),  # begins inside the multi-byte tail of a word
    ("mask 🎭 on stage", ["🎭 on"]),  # four-byte character, then ASCII
    ("a yy b zz c", ["zz", "yy"]),  # two stop strings, earliest in the text wins
    ("xabcdef", ["bcd", "cd"]),  # both complete on the same token: the earlier start wins
    ("no stop here", ["STOP", "here!"]),  # a prefix of a stop string at the very end
]


@pytest.mark.parametrize(("text", "stop"), STOP_CASES)
def test_stop_strings_never_leak_and_match_the_naive_reference(text: str, stop: list[str]) -> None:
    detok, pieces, shown = feed(text, stop)
    streamed = ["".join(pieces[: i + 1]) for i in range(len(pieces))]
    assert streamed == shown  # at every step, exactly what may be shown: nothing retracted
    assert all(REPLACEMENT not in piece for piece in pieces)
    hits = [text.find(s) for s in stop if s in text]
    if hits:
        assert detok.stopped
        assert streamed[-1] == detok.output_text == text[: min(hits)]
    else:
        assert not detok.stopped
        assert detok.add([], final=True) == text[len(streamed[-1]) :]
        assert detok.output_text == text


def test_stop_found_when_all_tokens_arrive_in_one_call_earliest_wins() -> None:
    text = "one zz two yy three"
    for stop in (["yy", "zz"], ["zz", "yy"]):
        detok = IncrementalDetokenizer(TOKENIZER, stop)
        assert detok.add(TOKENIZER.encode(text)) == "one "
        assert detok.stopped and detok.output_text == "one "


def test_final_flushes_held_back_text_but_never_a_completed_stop() -> None:
    detok = IncrementalDetokenizer(TOKENIZER, ["END"])
    ids = TOKENIZER.encode("hello EN")
    assert "".join(detok.add([t]) for t in ids) == "hello "  # "EN" may still become "END"
    assert detok.add([], final=True) == "EN"
    assert detok.output_text == "hello EN" and not detok.stopped

    detok = IncrementalDetokenizer(TOKENIZER, ["END"])
    ids = TOKENIZER.encode("hello END")
    pieces = [detok.add([t]) for t in ids[:-1]]
    pieces.append(detok.add(ids[-1:], final=True))  # the engine marks the last token final
    assert "".join(pieces) == "hello " == detok.output_text and detok.stopped


def test_final_flushes_an_incomplete_character_as_a_replacement() -> None:
    detok = IncrementalDetokenizer(TOKENIZER, [])
    ids = TOKENIZER.encode("ok中")[:-1]  # the model stopped inside a character
    assert "".join(detok.add([t]) for t in ids) == "ok"
    assert detok.add([], final=True) == REPLACEMENT

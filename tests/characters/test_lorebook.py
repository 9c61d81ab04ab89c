"""Lorebooks: character books and SillyTavern World Info files, read and written losslessly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from limelight.characters import (
    CardError,
    LoreEntry,
    LorePosition,
    SelectiveLogic,
    parse_card,
    parse_lorebook,
    to_world_info,
)


def eldoria(shared_data: Path) -> dict[str, Any]:
    world: dict[str, Any] = json.loads((shared_data / "st_worldinfo_Eldoria.json").read_text())
    return world


def test_eldoria_world_info_reads_and_writes_back_unchanged(shared_data: Path) -> None:
    raw = eldoria(shared_data)
    parsed = parse_lorebook(raw, name="Eldoria")
    assert parsed.kind == "world_info" and parsed.warnings == []
    book = parsed.book
    assert book.name == "Eldoria"
    assert [e.keys[0] for e in book.entries] == ["eldoria", "shadowfang", "glade", "power"]
    assert all(e.insert_position is LorePosition.BEFORE_CHAR for e in book.entries)
    assert all(e.enabled and not e.constant and e.insertion_order == 100 for e in book.entries)
    assert to_world_info(book) == raw


def test_world_info_matches_the_book_sillytavern_embedded_in_seraphina(
    shared_data: Path,
) -> None:
    """Converting Eldoria ourselves gives what SillyTavern put into Seraphina's card."""
    ours = parse_lorebook(eldoria(shared_data)).book
    raw_card = json.loads((shared_data / "cards" / "st_default_Seraphina.chara.json").read_text())
    theirs = parse_card(raw_card).card.character_book
    assert theirs is not None
    for mine, st in zip(ours.entries, theirs.entries, strict=True):
        assert (mine.keys, mine.content, mine.insertion_order, mine.enabled, mine.id) == (
            st.keys, st.content, st.insertion_order, st.enabled, st.id,
        )  # fmt: skip
        assert mine.insert_position == st.insert_position
        assert mine.position == st.position == "before_char"


ST_ENTRY = {
    "uid": 7, "key": ["dragon", "/wyrm(s)?/i"], "keysecondary": ["fire"], "comment": "Dragons",
    "content": "Dragons breathe fire.", "constant": False, "selective": True,
    "selectiveLogic": 3, "order": 42, "position": 4, "disable": True, "excludeRecursion": True,
    "preventRecursion": True, "delayUntilRecursion": False, "probability": 80,
    "useProbability": True, "depth": 2, "role": 1, "scanDepth": 5, "caseSensitive": True,
    "matchWholeWords": True, "group": "beasts", "automationId": "", "addMemo": True,
    "vectorized": False, "sticky": 0, "cooldown": 0, "delay": 0, "displayIndex": 3,
    "characterFilter": {"isExclude": False, "names": []},
}  # fmt: skip


def test_world_info_entry_settings_become_typed_properties() -> None:
    book = parse_lorebook({"entries": {"7": ST_ENTRY}}).book
    entry = book.entries[0]
    assert entry.id == 7 and entry.keys == ["dragon", "/wyrm(s)?/i"]
    assert entry.secondary_keys == ["fire"] and entry.selective
    assert entry.selective_logic is SelectiveLogic.AND_ALL
    assert entry.insertion_order == 42 and not entry.enabled
    assert entry.insert_position is LorePosition.AT_DEPTH and entry.depth == 2
    assert entry.role == 1 and entry.scan_depth == 5
    assert entry.exclude_recursion and entry.prevent_recursion
    assert not entry.delay_until_recursion
    assert entry.case_sensitivity is True and entry.match_whole_words is True
    assert entry.use_regex  # one key is written as a regex
    assert entry.extensions["addMemo"] is True  # unknown settings are kept under their names
    assert entry.extensions["characterFilter"] == ST_ENTRY["characterFilter"]
    assert to_world_info(book) == {"entries": {"7": ST_ENTRY}}


def test_character_book_json_is_recognized(shared_data: Path) -> None:
    raw = json.loads(
        (shared_data / "cards" / "stcontent_contest_Assistant_Sakana.chara.json").read_text()
    )
    parsed = parse_lorebook(raw["data"]["character_book"])
    assert parsed.kind == "character_book"
    assert parsed.book.name == "Sakana-WI" and len(parsed.book.entries) == 14
    assert all(e.insert_position is LorePosition.AFTER_CHAR for e in parsed.book.entries)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "a lorebook must be a JSON object"),
        ({"spec": "chara_card_v2", "data": {}}, "this is a character card, not a lorebook"),
        ({"name": "x"}, "no lorebook here"),
        ({"entries": {"0": "text"}}, "World Info entries['0'] must be an object"),
        ({"entries": [{"keys": "k", "content": [5]}]}, "content. must be a string, got array"),
    ],
)
def test_bad_lorebooks_raise_clear_errors(obj: object, message: str) -> None:
    with pytest.raises(CardError, match=message.replace("[", r"\[")):
        parse_lorebook(obj)


def test_broken_regex_keys_are_reported() -> None:
    parsed = parse_lorebook({"entries": [{"keys": ["/([a-z/"], "content": ""}]})
    assert any("not a valid regular expression" in w for w in parsed.warnings)


def test_missing_entry_fields_are_filled_and_named() -> None:
    parsed = parse_lorebook({"entries": [{"keys": ["k"]}], "extensions": {}})
    entry = parsed.book.entries[0]
    assert entry.content == "" and entry.enabled and entry.insertion_order == 100
    assert {w.split("'")[1] for w in parsed.warnings} == {
        "character_book.entries[0].content",
        "character_book.entries[0].extensions",
        "character_book.entries[0].enabled",
        "character_book.entries[0].insertion_order",
    }


def test_entry_position_defaults() -> None:
    assert LoreEntry(["k"], "c", position="before_char").insert_position is LorePosition.BEFORE_CHAR
    assert LoreEntry(["k"], "c").insert_position is LorePosition.AFTER_CHAR
    odd = LoreEntry(["k"], "c", extensions={"position": 99, "depth": -1, "selectiveLogic": "x"})
    assert odd.insert_position is LorePosition.AFTER_CHAR
    assert odd.depth == 4 and odd.selective_logic is SelectiveLogic.AND_ANY


def test_unknown_fields_survive_in_a_character_book() -> None:
    raw = {
        "extensions": {}, "x_book": 1, "recursive_scanning": "yes",
        "entries": [{
            "keys": ["k"], "content": "c", "extensions": {"x": 2}, "enabled": True,
            "insertion_order": 1, "position": "sideways", "x_entry": [3],
        }],
    }  # fmt: skip
    parsed = parse_lorebook(raw)
    book = parsed.book
    assert book.recursive_scanning is None and book.extra["recursive_scanning"] == "yes"
    assert book.entries[0].position is None and book.entries[0].extra["position"] == "sideways"
    out = book.to_dict()
    assert out["x_book"] == 1 and out["recursive_scanning"] == "yes"
    assert out["entries"][0]["x_entry"] == [3] and out["entries"][0]["position"] == "sideways"
    assert parse_lorebook(out).book == book


def test_lore_entry_validates_itself() -> None:
    with pytest.raises(CardError, match="keys must be strings"):
        LoreEntry([1], "c")  # type: ignore[list-item]
    with pytest.raises(CardError, match="position 'middle'"):
        LoreEntry(["k"], "c", position="middle")
    with pytest.raises(CardError, match="shadow spec fields"):
        LoreEntry(["k"], "c", extra={"content": "again"})

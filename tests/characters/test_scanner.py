"""The lorebook scanner, on hand-worked cases and against a naive reference.

The expectations on the Sakana card and the Eldoria world were worked out by reading the
entries (keys listed beside each case), not by running the scanner.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from limelight.characters import (
    Lorebook,
    LoreEntry,
    LorePosition,
    ScanResult,
    ScanSettings,
    parse_lorebook,
    read_card_file,
    scan_lorebook,
)


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def sakana(shared_data: Path) -> Lorebook:
    data = (shared_data / "cards" / "stcontent_contest_Assistant_Sakana.png").read_bytes()
    book = read_card_file(data).card.character_book
    assert book is not None
    return book


@pytest.fixture(scope="module")
def eldoria(shared_data: Path) -> Lorebook:
    raw = json.loads((shared_data / "st_worldinfo_Eldoria.json").read_text())
    return parse_lorebook(raw).book


def fired(result: ScanResult) -> list[tuple[int, int, str | None]]:
    """(entry index, pass, matched key) in admission order."""
    return [(a.index, a.pass_number, a.matched_key) for a in result.activations]


def scan(book: Lorebook, messages: list[str], **settings: object) -> ScanResult:
    return scan_lorebook(book, messages, words, ScanSettings.for_book(book, **settings))


# Sakana's book: 0 programming (write, code, make, ...), 1 proofreading (check, edit, scan,
# vet, ...), 2 writing (write, give, ...); 3-13 are gags with exclude_recursion (only the chat
# can fire them), 13 also prevent_recursion.  7 "like"+secondary "me", 8 "Money",
# 6 insults incl. "fool", 12 "hold"+secondary "your hand".  Defaults: substring matching,
# case-insensitive, scan depth 2, recursive.
SAKANA_CASES = [
    # "write" fires 0 and 2; 2's content says "credit", which holds "edit": 1 by recursion.
    (["Hi Sakana!", "Please write me a haiku."], {}, [(0, 1, "write"), (2, 1, "write"),
                                                      (1, 2, "edit")]),
    # Whole words: "credit" no longer counts as "edit".
    (["Hi Sakana!", "Please write me a haiku."], {"match_whole_words": True},
     [(0, 1, "write"), (2, 1, "write")]),
    # 7 needs "me": as a substring, "some" holds it; as a whole word, nothing does.
    (["I like some tea"], {}, [(7, 1, "like")]),
    (["I like some tea"], {"match_whole_words": True}, []),
    (["Do you like me?"], {"match_whole_words": True}, [(7, 1, "like")]),
    # "foolproof" holds "fool" (6); 6's content says "make mistakes": 0 by recursion.
    (["What a foolproof plan"], {}, [(6, 1, "fool"), (0, 2, "make")]),
    (["What a foolproof plan"], {"match_whole_words": True}, []),
    # "Money" matches "money" unless case-sensitive; 8's "paycheck" holds "check": 1.
    (["I need money."], {}, [(8, 1, "Money"), (1, 2, "check")]),
    (["I need money."], {"case_sensitive": True}, []),
    # Scan depth: the first message is out of reach at depth 2, in reach at 3.
    (["Let me check the code.", "ok", "sure"], {}, []),
    (["Let me check the code.", "ok", "sure"], {"scan_depth": 3},
     [(0, 1, "code"), (1, 1, "check")]),
    # 12's secondary keys need "your hand"/"your left hand"/"your right hand".
    (["Can you hold my hand?"], {}, []),
    (["Let me hold your hand"], {}, [(12, 1, "hold")]),
    # Recursion off: only what the chat itself fires.
    (["I need money."], {"recursive": False}, [(8, 1, "Money")]),
]  # fmt: skip


@pytest.mark.parametrize(("messages", "settings", "expected"), SAKANA_CASES)
def test_sakana_hand_worked(
    sakana: Lorebook,
    messages: list[str],
    settings: dict[str, object],
    expected: list[tuple[int, int, str]],
) -> None:
    assert fired(scan(sakana, messages, **settings)) == expected


def test_sakana_entries_go_after_the_character_definition(sakana: Lorebook) -> None:
    result = scan(sakana, ["Hi Sakana!", "Please write me a haiku."])
    assert list(result.by_position()) == [LorePosition.AFTER_CHAR]
    # All at insertion order 100: book order breaks the tie.
    assert result.by_position()[LorePosition.AFTER_CHAR] == [sakana.entries[i] for i in (0, 1, 2)]


# Eldoria: 0 eldoria/wood/forest/magical forest, 1 shadowfang/beast/monster(s)/beasts,
# 2 glade/safe haven/refuge, 3 power/magic/ability; all order 100, before the character.
# Content: 1 mentions "forest", "glade", "magic" and "power"; 3 mentions "glade" only;
# 2 mentions "forest", "Eldoria", "beast" and "magic".


def test_eldoria_recursion_reaches_every_entry(eldoria: Lorebook) -> None:
    result = scan(eldoria, ["Tell me about the Shadowfangs."])
    assert fired(result) == [(1, 1, "shadowfang"), (0, 2, "wood"), (2, 2, "glade"),
                             (3, 2, "power")]  # fmt: skip
    assert result.num_passes == 3  # the third pass finds nothing new
    assert list(result.by_position()) == [LorePosition.BEFORE_CHAR]


def test_scan_depth_beyond_the_chat_scans_it_all(eldoria: Lorebook) -> None:
    chat = ["A beast!", "hello", "hello"]
    assert fired(scan(eldoria, chat, scan_depth=10, recursive=False)) == [(1, 1, "beast")]
    assert fired(scan(eldoria, chat, scan_depth=0)) == []


def test_eldoria_whole_words_and_case(eldoria: Lorebook) -> None:
    assert fired(scan(eldoria, ["Tell me about the Shadowfangs."], match_whole_words=True)) == []
    assert fired(scan(eldoria, ["A shadowfang!"], match_whole_words=True, recursive=False)) == [
        (1, 1, "shadowfang")
    ]
    assert fired(scan(eldoria, ["ELDORIA"], case_sensitive=True)) == []


def test_eldoria_budget_cuts_off_in_rank_order(eldoria: Lorebook) -> None:
    cost = [words(e.content) for e in eldoria.entries]
    budget = cost[1] + cost[0] + cost[2]  # room for 1, then 0 and 2, not 3
    result = scan(eldoria, ["Tell me about the Shadowfangs."], token_budget=budget)
    assert [a.index for a in result.activations] == [1, 0, 2]
    assert result.is_budget_exhausted and result.num_tokens == budget
    assert [a.index for a in result.skipped] == [3]
    # One token short of entry 2: the scan stops there, though 3 would fit on its own.
    result = scan(eldoria, ["Tell me about the Shadowfangs."], token_budget=budget - 1)
    assert [a.index for a in result.activations] == [1, 0]
    assert [a.index for a in result.skipped] == [2, 3]


def with_entry(book: Lorebook, index: int, **changes: object) -> Lorebook:
    entries = list(book.entries)
    entry = entries[index]
    extensions = {**entry.extensions, **changes.pop("extensions", {})}  # type: ignore[dict-item]
    entries[index] = dataclasses.replace(entry, extensions=extensions, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(book, entries=entries)


def test_eldoria_constant_entry_chain(eldoria: Lorebook) -> None:
    # 3 made constant: fires on anything; its "glade" fires 2; 2 fires 0 and 1.
    book = with_entry(eldoria, 3, constant=True)
    expected = [(3, 1, None), (2, 2, "glade"), (0, 3, "eldoria"), (1, 3, "shadowfang")]
    assert fired(scan(book, ["Hello there."])) == expected
    # ... unless 3 prevents recursion, or 2 refuses to be reached by recursion.
    prevented = with_entry(book, 3, extensions={"prevent_recursion": True})
    assert fired(scan(prevented, ["Hello there."])) == [(3, 1, None)]
    excluded = with_entry(book, 2, extensions={"exclude_recursion": True})
    assert fired(scan(excluded, ["Hello there."])) == [(3, 1, None)]
    # max_passes=2: the chain stops after the first recursion pass.
    assert fired(scan(book, ["Hello there."], max_passes=2)) == [(3, 1, None), (2, 2, "glade")]


def test_eldoria_delay_until_recursion_and_disabled(eldoria: Lorebook) -> None:
    delayed = with_entry(eldoria, 0, extensions={"delay_until_recursion": True})
    # "forest" is in the chat, but 0 waits for recursion: 1 fires on "beast", then 0 in
    # pass 2, on "wood" (its first key, found in 1's "within these woods").
    assert fired(scan(delayed, ["A beast in the forest."], recursive=False)) == [(1, 1, "beast")]
    assert fired(scan(delayed, ["A beast in the forest."]))[:2] == [(1, 1, "beast"),
                                                                  (0, 2, "wood")]  # fmt: skip
    disabled = with_entry(eldoria, 1, enabled=False)
    assert fired(scan(disabled, ["A beast!"], recursive=False)) == []


LOGIC_TEXTS = {
    "only seraphina": "The forest is quiet, Seraphina.",
    "neither": "The forest is quiet.",
    "both": "Seraphina, the forest is quiet near the old mill.",
}
LOGIC_TABLE = {  # selectiveLogic → which texts fire entry 0 (secondary: seraphina, mill)
    0: {"only seraphina", "both"},  # AND ANY
    1: {"only seraphina", "neither"},  # NOT ALL
    2: {"neither"},  # NOT ANY
    3: {"both"},  # AND ALL
}


@pytest.mark.parametrize("logic", sorted(LOGIC_TABLE))
def test_secondary_key_logic(eldoria: Lorebook, logic: int) -> None:
    book = with_entry(
        eldoria, 0, selective=True, secondary_keys=["seraphina", "mill"],
        extensions={"selectiveLogic": logic},
    )  # fmt: skip
    hits = {
        name for name, text in LOGIC_TEXTS.items() if scan(book, [text], recursive=False).entries
    }
    assert hits == LOGIC_TABLE[logic]
    unselective = with_entry(book, 0, selective=False)  # secondary keys are then ignored
    assert all(scan(unselective, [t], recursive=False).entries for t in LOGIC_TEXTS.values())


def test_regex_keys(eldoria: Lorebook) -> None:
    book = with_entry(eldoria, 1, keys=["/shadow ?fangs?/i"])
    assert fired(scan(book, ["SHADOW FANG ahead"], recursive=False)) == [
        (1, 1, "/shadow ?fangs?/i")
    ]
    strict = with_entry(eldoria, 1, keys=["/Shadowfang/"])
    assert fired(scan(strict, ["shadowfang"], recursive=False)) == []
    broken = with_entry(eldoria, 1, keys=["/([/", "beast"])
    assert fired(scan(broken, ["a beast"], recursive=False)) == [(1, 1, "beast")]


def test_entry_scan_depth_and_case_override_the_book(eldoria: Lorebook) -> None:
    chat = ["The glade is calm.", "...", "..."]
    deep = with_entry(eldoria, 2, extensions={"scan_depth": 3})
    assert fired(scan(deep, chat, recursive=False)) == [(2, 1, "glade")]
    assert fired(scan(eldoria, chat, recursive=False)) == []
    cased = with_entry(eldoria, 2, extensions={"case_sensitive": True})
    assert fired(scan(cased, ["GLADE"], recursive=False)) == []


def test_positions_depths_and_order() -> None:
    entries = [
        LoreEntry(["a"], "A", insertion_order=50, extensions={"position": 4, "depth": 2}),
        LoreEntry(["a"], "B", insertion_order=10, position="before_char"),
        LoreEntry(["a"], "C", insertion_order=5, extensions={"position": 4, "depth": 0}),
        LoreEntry(["a"], "D", insertion_order=20, extensions={"position": 4, "depth": 2}),
        LoreEntry(["a"], "E", insertion_order=30, position="before_char"),
        LoreEntry(["a"], "F", insertion_order=1, extensions={"position": 6}),
    ]
    result = scan_lorebook(Lorebook(entries), ["a"], words)
    # Admitted by rank: higher insertion order first.
    assert [e.content for e in result.entries] == ["A", "E", "D", "B", "C", "F"]
    grouped = result.by_position()
    assert {p: [e.content for e in es] for p, es in grouped.items()} == {
        LorePosition.AT_DEPTH: ["C", "D", "A"],
        LorePosition.BEFORE_CHAR: ["B", "E"],
        LorePosition.EXAMPLES_BOTTOM: ["F"],
    }
    assert {d: [e.content for e in es] for d, es in result.at_depth().items()} == {
        0: ["C"], 2: ["D", "A"],
    }  # fmt: skip


def test_priority_and_constants_rank_first_for_the_budget() -> None:
    entries = [
        LoreEntry(["a"], "one two", insertion_order=100),
        LoreEntry(["a"], "three four", insertion_order=1, priority=500),
        LoreEntry([], "five six", insertion_order=0, constant=True),
    ]
    result = scan_lorebook(Lorebook(entries), ["a"], words, ScanSettings(token_budget=4))
    assert [a.index for a in result.activations] == [2, 1]
    assert [a.index for a in result.skipped] == [0]


def test_book_settings_are_the_defaults() -> None:
    book = Lorebook([], scan_depth=5, token_budget=50, recursive_scanning=False)
    settings = ScanSettings.for_book(book)
    assert (settings.scan_depth, settings.token_budget, settings.recursive) == (5, 50, False)
    assert ScanSettings.for_book(book, scan_depth=1).scan_depth == 1
    with pytest.raises(ValueError, match="max_passes must be >= 1"):
        ScanSettings(max_passes=0)

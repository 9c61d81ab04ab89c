"""The lorebook scanner: which entries a chat activates, within a token budget.

Deterministic, in passes (the same input always gives the same result):

1. Pass 1 scans each enabled entry's chat window, the last `scan_depth` messages (the
   entry's own scan depth when it has one), for its keys (`keys.py`).  A selective entry
   also needs its secondary keys to agree, by its `SelectiveLogic`.  Constant entries
   activate without keys; `delay_until_recursion` entries wait for pass 2.
2. A pass's activations are admitted in rank order (constant entries first, then higher
   `priority`, falling back to `insertion_order`, then book order) while their token counts
   fit the budget.  The first that does not fit ends the scan, as in SillyTavern.
3. With recursion on, the admitted entries' content (except `prevent_recursion` ones) joins
   a recursion buffer and the next pass scans window + buffer for entries not yet active
   (never `exclude_recursion` ones).  The scan ends when a pass activates nothing, the
   budget runs out or `max_passes` is reached.

Results are grouped by insertion position, each group sorted by `insertion_order` (lower
first, as both card specs and SillyTavern order them), ties in book order.  Kept in
`extensions` but not applied here: probability, inclusion groups, timed effects (sticky,
cooldown, delay) and vector matching, which need chat state or randomness.  Tokens are
counted by a function the caller passes in: the scanner knows no tokenizer.  Written by
hand: these activation rules are limelight's own semantics, checked against a naive
reference in the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from limelight.characters.errors import CardError
from limelight.characters.keys import key_matches
from limelight.characters.lorebook import Lorebook, LoreEntry, LorePosition, SelectiveLogic

TokenCounter = Callable[[str], int]


@dataclass(frozen=True, slots=True)
class ScanSettings:
    scan_depth: int = 2  # recent messages scanned (SillyTavern's default)
    token_budget: int | None = None  # None: no limit
    recursive: bool = True
    max_passes: int = 8  # pass 1 (the chat) plus up to 7 recursion passes
    case_sensitive: bool = False
    match_whole_words: bool = False

    def __post_init__(self) -> None:
        if self.scan_depth < 0:
            raise CardError(f"scan_depth must be >= 0, got {self.scan_depth}")
        if self.token_budget is not None and self.token_budget < 0:
            raise CardError(f"token_budget must be >= 0 or None, got {self.token_budget}")
        if self.max_passes < 1:
            raise CardError(f"max_passes must be >= 1, got {self.max_passes}")

    @classmethod
    def for_book(cls, book: Lorebook, **overrides: object) -> ScanSettings:
        """Defaults, then the book's own settings where it has them, then `overrides`."""
        settings = cls()
        if book.scan_depth is not None:
            settings = replace(settings, scan_depth=book.scan_depth)
        if book.token_budget is not None:
            settings = replace(settings, token_budget=book.token_budget)
        if book.recursive_scanning is not None:
            settings = replace(settings, recursive=book.recursive_scanning)
        return replace(settings, **overrides)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Activation:
    entry: LoreEntry
    index: int  # the entry's place in the book
    pass_number: int  # 1: the chat; 2 and on: recursion
    matched_key: str | None  # None for a constant entry
    num_tokens: int


@dataclass(frozen=True, slots=True)
class ScanResult:
    activations: list[Activation]  # admitted, in admission order
    skipped: list[Activation] = field(default_factory=list)  # activated, over the budget
    num_tokens: int = 0
    is_budget_exhausted: bool = False
    num_passes: int = 0

    @property
    def entries(self) -> list[LoreEntry]:
        return [a.entry for a in self.activations]

    def by_position(self) -> dict[LorePosition, list[LoreEntry]]:
        """Admitted entries per insertion position, each list in insertion order."""
        grouped: dict[LorePosition, list[LoreEntry]] = {}
        for activation in sorted(self.activations, key=_placement):
            grouped.setdefault(activation.entry.insert_position, []).append(activation.entry)
        return grouped

    def at_depth(self) -> dict[int, list[LoreEntry]]:
        """The AT_DEPTH entries keyed by depth (messages from the end of the chat)."""
        grouped: dict[int, list[LoreEntry]] = {}
        for entry in self.by_position().get(LorePosition.AT_DEPTH, []):
            grouped.setdefault(entry.depth, []).append(entry)
        return grouped


def scan_lorebook(
    book: Lorebook,
    messages: Sequence[str],
    count_tokens: TokenCounter,
    settings: ScanSettings | None = None,
) -> ScanResult:
    """Activate `book`'s entries for a chat; `messages` run oldest first."""
    settings = settings or ScanSettings.for_book(book)
    windows: dict[int, str] = {}
    admitted: list[Activation] = []
    active: set[int] = set()
    buffer: list[str] = []
    num_tokens, pass_number = 0, 0
    while pass_number < settings.max_passes:
        pass_number += 1
        found = _activate(book, messages, settings, pass_number, active, buffer, windows)
        if not found:
            break
        for place, (index, key) in enumerate(found):
            entry = book.entries[index]
            cost = count_tokens(entry.content)
            budget = settings.token_budget
            if budget is not None and num_tokens + cost > budget:
                over = [
                    _activation(book, i, k, pass_number, count_tokens) for i, k in found[place:]
                ]
                return ScanResult(admitted, over, num_tokens, True, pass_number)
            admitted.append(Activation(entry, index, pass_number, key, cost))
            active.add(index)
            num_tokens += cost
        fresh = [book.entries[i].content for i, _ in found if not book.entries[i].prevent_recursion]
        if not settings.recursive or not fresh:
            break
        buffer.extend(fresh)
    return ScanResult(admitted, [], num_tokens, False, pass_number)


def _activate(
    book: Lorebook,
    messages: Sequence[str],
    settings: ScanSettings,
    pass_number: int,
    active: set[int],
    buffer: list[str],
    windows: dict[int, str],
) -> list[tuple[int, str | None]]:
    """(entry index, matched key) for the entries this pass activates, in rank order."""
    found = []
    for index, entry in enumerate(book.entries):
        if index in active or not entry.enabled:
            continue
        if pass_number == 1 and entry.delay_until_recursion:
            continue
        if pass_number > 1 and entry.exclude_recursion:
            continue
        depth = entry.scan_depth if entry.scan_depth is not None else settings.scan_depth
        if depth not in windows:
            windows[depth] = "\n".join(messages[max(len(messages) - depth, 0) :])
        text = "\n".join([windows[depth], *buffer]) if pass_number > 1 else windows[depth]
        fires, key = _fires(entry, text, settings)
        if fires:
            found.append((index, key))
    return sorted(found, key=lambda item: _rank(book.entries[item[0]], item[0]))


def _fires(entry: LoreEntry, text: str, settings: ScanSettings) -> tuple[bool, str | None]:
    if entry.constant:
        return True, None
    case = entry.case_sensitivity
    whole = entry.match_whole_words
    options = {
        "case_sensitive": settings.case_sensitive if case is None else case,
        "whole_words": settings.match_whole_words if whole is None else whole,
    }
    primary = next((k for k in entry.keys if key_matches(k, text, **options)), None)
    if primary is None:
        return False, None
    secondary = [k for k in entry.secondary_keys or [] if k.strip()]
    if not (entry.selective and secondary):
        return True, primary
    hits = [key_matches(k, text, **options) for k in secondary]
    logic = entry.selective_logic
    passes = {
        SelectiveLogic.AND_ANY: any(hits),
        SelectiveLogic.AND_ALL: all(hits),
        SelectiveLogic.NOT_ANY: not any(hits),
        SelectiveLogic.NOT_ALL: not all(hits),
    }[logic]
    return passes, primary


def _rank(entry: LoreEntry, index: int) -> tuple[int, float, int]:
    weight = entry.priority if entry.priority is not None else entry.insertion_order
    return (0 if entry.constant else 1, -weight, index)


def _placement(activation: Activation) -> tuple[float, int]:
    return (activation.entry.insertion_order, activation.index)


def _activation(
    book: Lorebook, index: int, key: str | None, pass_number: int, count_tokens: TokenCounter
) -> Activation:
    entry = book.entries[index]
    return Activation(entry, index, pass_number, key, count_tokens(entry.content))

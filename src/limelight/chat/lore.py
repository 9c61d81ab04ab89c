"""Lore for a turn: the character's lorebook scanned over the recent chat.

The scanner (`limelight.characters.scanner`) decides which entries fire; this module
places them in the prompt's two lore slots.  Constant entries fire on every turn, so they
sit in the stable part after the character definition; entries triggered by keys change
from turn to turn, so they go with this turn's retrievals, after the history.  A card's
finer positions (before/after the definition, at a depth) are folded into these two slots:
keeping the prompt's early part identical across turns is worth more to a chat than the
exact spot of an entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from limelight.characters import Lorebook, ScanSettings, scan_lorebook

DEFAULT_BUDGET = 512  # tokens of lore per turn when the book sets no budget


def lore_sections(
    book: Lorebook | None, recent: Sequence[str], count: Callable[[str], int]
) -> tuple[str, str]:
    """(constant lore, lore triggered by `recent`), each as text ("" when none)."""
    if book is None or not book.entries:
        return "", ""
    settings = ScanSettings.for_book(book)
    if settings.token_budget is None:
        settings = ScanSettings.for_book(book, token_budget=DEFAULT_BUDGET)
    result = scan_lorebook(book, recent, count, settings)
    constant = [a.entry.content.strip() for a in result.activations if a.entry.constant]
    triggered = [a.entry.content.strip() for a in result.activations if not a.entry.constant]
    return "\n".join(c for c in constant if c), "\n".join(t for t in triggered if t)

"""A card's greetings, macros expanded: what a new chat offers as first-message swipes.

The first message comes first, then the alternate greetings in card order; in a group chat
the card's group-only greetings follow.  Blank greetings are dropped.  Which one a chat
shows is the chat's business.
"""

from __future__ import annotations

from limelight.characters.card import CharacterCard
from limelight.characters.macros import MacroContext, expand_macros


def greetings(card: CharacterCard, context: MacroContext, *, in_group: bool = False) -> list[str]:
    texts = [card.first_mes, *card.alternate_greetings]
    if in_group:
        texts.extend(card.group_only_greetings)
    return [expand_macros(text, context) for text in texts if text.strip()]

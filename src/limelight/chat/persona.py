"""A character as the prompt needs it: its definition text, greetings and lore.

The definition is rendered once per character and is the same for every user, which is
what lets the engine's prefix cache share it: `{{user}}` in a card becomes `USER_NAME`
here, never a particular user's name, and `{{random}}`-style macros draw from a generator
seeded by the character's slug.  Greetings are drawn per session.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from limelight.characters import CharacterCard, Lorebook, MacroContext, expand_macros

USER_NAME = "User"
DEFAULT_SYSTEM = (
    "You are {{char}}. Write {{char}}'s next reply in a fictional chat with {{user}}: stay "
    "in character, be vivid and concise, and never speak for {{user}}."
)


@dataclass(slots=True)
class Persona:
    slug: str
    name: str
    definition: str  # identical for every user
    greetings: list[str]  # first message, then the alternate greetings (its swipes)
    post_history: str  # the card's post-history instructions, macros expanded
    lorebook: Lorebook | None

    def macros(self, text: str, seed: str) -> str:
        context = MacroContext(USER_NAME, self.name, random.Random(seed), pick_seed=seed)
        return expand_macros(text, context)


def persona(slug: str, card: CharacterCard) -> Persona:
    context = MacroContext(USER_NAME, card.name, random.Random(slug), pick_seed=slug)

    def expand(text: str) -> str:
        return expand_macros(text, context).strip()

    sections = [
        expand(card.system_prompt or DEFAULT_SYSTEM),
        expand(card.description),
        f"{card.name}'s personality: {expand(card.personality)}" if card.personality else "",
        f"Scenario: {expand(card.scenario)}" if card.scenario else "",
        _examples(expand(card.mes_example)),
    ]
    return Persona(
        slug=slug,
        name=card.name,
        definition="\n\n".join(s for s in sections if s),
        greetings=[g for g in (card.first_mes, *card.alternate_greetings) if g.strip()],
        post_history=expand(card.post_history_instructions),
        lorebook=card.character_book,
    )


def _examples(text: str) -> str:
    """`<START>`-separated example chats, shown as such."""
    chats = [c.strip() for c in text.replace("<start>", "<START>").split("<START>") if c.strip()]
    if not chats:
        return ""
    return "Example dialogue:\n" + "\n\n".join(chats)

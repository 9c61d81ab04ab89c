"""Card macros: `{{char}}`, `{{user}}`, `{{random}}`, `{{pick}}`, `{{roll}}`, comments.

Expanded in a fixed order so nested macros work (`{{random:{{user}},{{char}}}}`):
comments `{{// ...}}` are removed first, then the legacy `<USER>`/`<BOT>` and the names
(`{{user}}`, `{{char}}` and any caller `variables`, case-insensitive), then the chance
macros.  `{{random:a,b}}` (or `{{random::a::b}}` where options hold commas) draws from the
caller's seeded `rng`; `{{pick:...}}` chooses by a hash of `pick_seed`, the options and
which occurrence it is, so it stays the same every time a text is rendered for one chat;
`{{roll:NdM+K}}` (or `{{roll:20}}`, one d20) rolls with `rng`.  Unknown or malformed
macros are left as written.  Hand-written: the macro language is the cards' own.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_DICE = 100
MAX_SIDES = 1_000_000

_COMMENT = re.compile(r"\{\{//.*?\}\}", re.DOTALL)
_LEGACY = re.compile(r"<(USER|BOT)>", re.IGNORECASE)
_NAME = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")
_CHANCE = re.compile(r"\{\{(random|pick|roll)(?:\s*::?|\s+)([^{}]*)\}\}", re.IGNORECASE)
_DICE = re.compile(r"^\s*(\d*)\s*(?:d\s*(\d+))?\s*(?:([+-])\s*(\d+))?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class MacroContext:
    user: str
    char: str
    rng: random.Random = field(default_factory=random.Random)  # pass a seeded one for tests
    pick_seed: str = ""  # e.g. the chat id: the same seed picks the same options
    variables: Mapping[str, str] = field(default_factory=dict)  # more {{name}} macros


def expand_macros(text: str, context: MacroContext) -> str:
    text = _COMMENT.sub("", text)
    text = _LEGACY.sub(
        lambda m: context.user if m.group(1).upper() == "USER" else context.char, text
    )
    names = {"user": context.user, "char": context.char}
    names.update({k.lower(): v for k, v in context.variables.items()})
    text = _NAME.sub(lambda m: names.get(m.group(1).lower(), m.group(0)), text)
    picks = itertools.count()  # which {{pick}} this is, for a stable choice
    return _CHANCE.sub(lambda m: _chance(m, context, next(picks)), text)


def _chance(match: re.Match[str], context: MacroContext, occurrence: int) -> str:
    kind, args = match.group(1).lower(), match.group(2)
    if kind == "roll":
        rolled = roll(args, context.rng)
        return match.group(0) if rolled is None else str(rolled)
    if not args.strip():
        return match.group(0)
    options = split_options(args)
    if kind == "random":
        return context.rng.choice(options)
    digest = hashlib.sha256(f"{context.pick_seed}\0{occurrence}\0{args}".encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


def split_options(args: str) -> list[str]:
    """`a::b::c` splits on `::` as written; otherwise on commas (`\\,` escapes one), trimmed."""
    if "::" in args:
        return args.split("::")
    marker = "\0"
    items = args.replace("\\,", marker).split(",")
    return [item.strip().replace(marker, ",") for item in items]


def roll(formula: str, rng: random.Random) -> int | None:
    """`NdM+K` dice (N defaults to 1; a bare `20` is 1d20); None when malformed."""
    found = _DICE.match(formula)
    if found is None or not formula.strip():
        return None
    count_text, sides_text, sign, bonus_text = found.groups()
    if sides_text is None:  # a bare number: the sides of one die
        if not count_text or sign:
            return None
        count, sides = 1, int(count_text)
    else:
        count, sides = int(count_text or 1), int(sides_text)
    if not (1 <= count <= MAX_DICE and 1 <= sides <= MAX_SIDES):
        return None
    total = sum(rng.randint(1, sides) for _ in range(count))
    bonus = int(bonus_text or 0)
    return total - bonus if sign == "-" else total + bonus

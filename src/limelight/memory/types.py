"""The memory package's boundary types: `Turn` (what memories come from), `MemoryItem`.

A `MemoryItem` is one unit of long-term memory for a (user, character) pair:
- `text` is what a prompt gets when the memory is retrieved;
- `context` is text it is matched on but that is never injected, one passage per part
  (an episode's turns with their neighbours, which carry what its own turns leave
  implicit: who "she" is, the question an answer answers);
- `source_ids` are the turn or message ids it was derived from (it "covers" them);
- `about` names who it is about, one name per part (an episode: the speaker of each of its
  turns; a fact: its subject), so a query naming someone can favour their memories;
- `embedding` is its vector for dense retrieval (see `item_vector`).

This module holds data only: deriving items is episodes.py's and extract.py's, searching
them index.py's, storing them the service's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

import numpy as np

from limelight.engine.errors import LimelightError

MemoryKind = Literal["episode", "fact", "summary"]

# How much an item's own text counts beside its context, in its vector and its keyword
# terms.  The context contains the own text too, so own words weigh 1 + 0.5.  Tuned on
# bench/memory.py; stored vectors depend on it, so it is a constant, not a setting.
OWN_TEXT_WEIGHT = 0.5


class InvalidMemoryError(LimelightError, ValueError):
    """A memory item or turn is malformed: empty text, an unknown kind, a bad vector, ..."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation, as memory sees it."""

    id: str
    speaker: str
    text: str
    created_at: datetime
    session_id: str = ""  # episodes never span two sessions

    def __post_init__(self) -> None:
        if not self.id:
            raise InvalidMemoryError("a turn needs a non-empty id")
        if not self.speaker:
            raise InvalidMemoryError(f"turn {self.id!r} needs a speaker name")

    @property
    def line(self) -> str:
        """The turn as one transcript line: `Speaker: text`."""
        return f"{self.speaker}: {self.text}"


@dataclass(slots=True)
class MemoryItem:
    id: str
    kind: MemoryKind
    text: str
    source_ids: tuple[str, ...]
    created_at: datetime
    context: tuple[str, ...] = ()
    about: tuple[str, ...] = ()
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.id:
            raise InvalidMemoryError("a memory item needs a non-empty id")
        if self.kind not in get_args(MemoryKind):
            raise InvalidMemoryError(
                f"memory {self.id!r}: unknown kind {self.kind!r}; use one of {get_args(MemoryKind)}"
            )
        if not self.text.strip():
            raise InvalidMemoryError(f"memory {self.id!r} has no text")
        self.source_ids = tuple(self.source_ids)
        self.context = tuple(self.context)
        self.about = tuple(self.about)
        if self.embedding is not None:
            self.embedding = np.asarray(self.embedding, dtype=np.float32)
            if self.embedding.ndim != 1:
                raise InvalidMemoryError(f"memory {self.id!r}: embedding must be one vector")

    @property
    def matched_text(self) -> str:
        """What the item is matched on: its context, or its own text when it has none."""
        return "\n".join(self.context) or self.text


def item_vector(own: np.ndarray, context: np.ndarray | None) -> np.ndarray:
    """An item's stored vector from the unit vectors of its own text and of its context.

    The context vector is the normalised mean of its passages' vectors (one embedding per
    turn, shared by the episodes around it, instead of one per window: 5x less ingest
    work, the same recall on the bench).  The sum context + `OWN_TEXT_WEIGHT` × own is
    deliberately not renormalised: a query's dot product with it is then exactly
    cos(query, context) + 0.5 cos(query, own), which retrieves better than the cosine with
    the renormalised sum.  An item without context is its own context.
    """
    own = np.asarray(own, dtype=np.float32)
    base = own if context is None else np.asarray(context, dtype=np.float32)
    return (base + OWN_TEXT_WEIGHT * own).astype(np.float32)


def context_vector(passages: np.ndarray) -> np.ndarray:
    """The normalised mean of passage vectors [P, D] → [D]."""
    mean = passages.mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)

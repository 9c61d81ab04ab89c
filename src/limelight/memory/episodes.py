"""Episodic memories: conversation turns → `MemoryItem`s of kind "episode", without an LLM.

An episode is a short run of consecutive turns of one session, packed greedily up to
`max_chars` of transcript (a long turn stands alone), headed by the date it was said:

    [8 May 2023] Caroline: I went to a LGBTQ support group yesterday...
    Melanie: Wow, that's cool, Caroline! What happened that was so awesome?

Its `context` is its turns with the `context_turns` turns on either side, one dated
passage per turn, so an episode is found by what its neighbours say too ("she" in a reply,
the question an answer answers), while a prompt only pays for the episode's own turns.
Episodes never overlap, so k retrieved episodes cover k distinct runs of turns.  The
design and its sizes come from bench/memory.py on LoCoMo, which ingests through this code.

Packing is prefix-stable: appending turns never moves an earlier boundary, only grows the
session's last episode, and an episode's id is its first turn's id.  So after an exchange
`episodes_touched` gives the few episodes to (re)write, under ids that replace old ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from limelight.memory.types import InvalidMemoryError, MemoryItem, Turn

EPISODE_PREFIX = "episode:"


@dataclass(frozen=True, slots=True)
class EpisodeConfig:
    max_chars: int = 200  # transcript characters an episode may hold (one turn always fits)
    context_turns: int = 2  # turns on each side that an episode is also matched on

    def __post_init__(self) -> None:
        if self.max_chars < 1:
            raise InvalidMemoryError(f"max_chars must be >= 1 (got {self.max_chars})")
        if self.context_turns < 0:
            raise InvalidMemoryError(f"context_turns must be >= 0 (got {self.context_turns})")


def derive_episodes(turns: Sequence[Turn], config: EpisodeConfig | None = None) -> list[MemoryItem]:
    """Every episode of `turns` (any number of sessions, each in order), in order."""
    config = config or EpisodeConfig()
    episodes: list[MemoryItem] = []
    for session in _sessions(turns):
        for start, end in pack(session, config.max_chars):
            episodes.append(_episode(session, start, end, config.context_turns))
    return episodes


def episodes_touched(
    session: Sequence[Turn], num_new: int, config: EpisodeConfig | None = None
) -> list[MemoryItem]:
    """The episodes of one session that its last `num_new` turns created or changed.

    Call it after appending turns; write the results over the stored items of the same ids.
    """
    config = config or EpisodeConfig()
    if not 0 <= num_new <= len(session):
        raise InvalidMemoryError(f"num_new must be in [0, {len(session)}] (got {num_new})")
    _check_one_session(session)
    first_new = len(session) - num_new
    return [
        _episode(session, start, end, config.context_turns)
        for start, end in pack(session, config.max_chars)
        if num_new and end + config.context_turns > first_new
    ]


def pack(session: Sequence[Turn], max_chars: int) -> list[tuple[int, int]]:
    """Greedy [start, end) runs of turns of at most `max_chars` transcript characters each."""
    runs: list[tuple[int, int]] = []
    start, size = 0, 0
    for i, turn in enumerate(session):
        length = len(turn.line)
        if i > start and size + length > max_chars:
            runs.append((start, i))
            start, size = i, 0
        size += length
    if session:
        runs.append((start, len(session)))
    return runs


def _episode(session: Sequence[Turn], start: int, end: int, context_turns: int) -> MemoryItem:
    own = session[start:end]
    around = session[max(0, start - context_turns) : end + context_turns]
    return MemoryItem(
        id=EPISODE_PREFIX + own[0].id,
        kind="episode",
        text=f"[{_date(own[0])}] " + "\n".join(t.line for t in own),
        source_ids=tuple(t.id for t in own),
        created_at=own[0].created_at,
        context=tuple(f"[{_date(t)}] {t.line}" for t in around),
        about=tuple(t.speaker for t in own),
    )


def _date(turn: Turn) -> str:
    return f"{turn.created_at.day} {turn.created_at:%B %Y}"  # 8 May 2023: 5 tokens, unambiguous


def _sessions(turns: Sequence[Turn]) -> list[list[Turn]]:
    by_session: dict[str, list[Turn]] = {}
    for turn in turns:
        by_session.setdefault(turn.session_id, []).append(turn)
    return list(by_session.values())


def _check_one_session(session: Sequence[Turn]) -> None:
    ids = {t.session_id for t in session}
    if len(ids) > 1:
        raise InvalidMemoryError(f"episodes_touched takes one session's turns, got {sorted(ids)}")

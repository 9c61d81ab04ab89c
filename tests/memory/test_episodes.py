"""Episodes: packing, their text and context, and incremental updates equal a rederive."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from limelight.memory import EpisodeConfig, InvalidMemoryError, Turn, derive_episodes
from limelight.memory.episodes import episodes_touched, pack

DAY1 = datetime(2023, 5, 8, 13, 56)


def turns(lengths: list[int], session: str = "s1", start: datetime = DAY1) -> list[Turn]:
    speakers = ["Ann", "Bo"]
    return [
        Turn(f"{session}:{i}", speakers[i % 2], "x" * n, start + timedelta(minutes=i), session)
        for i, n in enumerate(lengths)
    ]


def test_pack_is_greedy_and_a_long_turn_stands_alone() -> None:
    session = turns([10, 10, 300, 10, 10, 10])  # lines are "Ann: " + text: 15, 14, 304, ...
    assert pack(session, 40) == [(0, 2), (2, 3), (3, 5), (5, 6)]
    assert pack(session, 1) == [(i, i + 1) for i in range(6)]
    assert pack([], 40) == []


def test_episode_text_context_and_sources() -> None:
    session = [
        Turn("D1:1", "Caroline", "I went to a support group.", DAY1, "S1"),
        Turn("D1:2", "Melanie", "Wow, how was it?", DAY1, "S1"),
        Turn("D1:3", "Caroline", "Powerful. " * 30, DAY1, "S1"),
    ]
    first, second = derive_episodes(session, EpisodeConfig(max_chars=80, context_turns=1))
    assert first.id == "episode:D1:1" and first.kind == "episode"
    assert first.text == (
        "[8 May 2023] Caroline: I went to a support group.\nMelanie: Wow, how was it?"
    )
    assert first.source_ids == ("D1:1", "D1:2") and first.about == ("Caroline", "Melanie")
    assert first.context == tuple(f"[8 May 2023] {t.line}" for t in session)
    assert second.source_ids == ("D1:3",)
    assert second.context == tuple(f"[8 May 2023] {t.line}" for t in session[1:])
    assert first.created_at == DAY1


def test_episodes_never_span_sessions() -> None:
    day2 = DAY1 + timedelta(days=30)
    everything = turns([5, 5], "s1") + turns([5, 5], "s2", day2)
    episodes = derive_episodes(everything, EpisodeConfig(max_chars=1000))
    assert [e.source_ids for e in episodes] == [("s1:0", "s1:1"), ("s2:0", "s2:1")]
    assert episodes[1].text.startswith("[7 June 2023] ")


@pytest.mark.parametrize("seed", range(5))
def test_touched_episodes_are_exactly_what_appending_changed(seed: int) -> None:
    rng = random.Random(seed)
    config = EpisodeConfig(max_chars=rng.choice([30, 60, 200]), context_turns=rng.randint(0, 3))
    session = turns([rng.randint(1, 80) for _ in range(40)])
    stored = {e.id: e for e in derive_episodes(session[:2], config)}
    done = 2
    while done < len(session):
        step = min(rng.randint(1, 3), len(session) - done)  # an exchange appends 1-3 turns
        done += step
        touched = episodes_touched(session[:done], step, config)
        fresh = {e.id: e for e in derive_episodes(session[:done], config)}
        changed = {i for i, e in fresh.items() if i not in stored or stored[i] != e}
        assert changed <= {e.id for e in touched}  # everything that changed is rewritten
        assert len(touched) <= 2 + 2 * config.context_turns + step  # and only a few
        stored.update({e.id: e for e in touched})
        assert stored == fresh


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidMemoryError, match="max_chars"):
        EpisodeConfig(max_chars=0)
    with pytest.raises(InvalidMemoryError, match="num_new"):
        episodes_touched(turns([5]), 2)
    with pytest.raises(InvalidMemoryError, match="one session"):
        episodes_touched(turns([5], "a") + turns([5], "b"), 1)
    with pytest.raises(InvalidMemoryError, match="speaker"):
        Turn("t", "", "text", DAY1)
    assert episodes_touched(turns([5, 5]), 0) == []

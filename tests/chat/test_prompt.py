"""Prompt assembly (`chat/prompt.py`) with a fake chat template and a word-count tokenizer:
the layout, history budgeting down to `LOW_WATER` checked against a naive reference, the
sticky cut, `PromptTooLong`, same-role merging and the user-first template fallback."""

from __future__ import annotations

import pytest
from jinja2 import TemplateError

from limelight.chat.prompt import (
    LOW_WATER,
    PromptParts,
    PromptTooLong,
    Turn,
    _merge_same_roles,
    build_prompt,
    chat_messages,
    render,
)

OPENER = "(The conversation begins.)"


def template(messages: list[dict[str, str]]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"


def user_first(messages: list[dict[str, str]]) -> str:
    """A template like Gemma's or Mistral's: roles must alternate, user first."""
    talk = [m for m in messages if m["role"] != "system"]
    for i, message in enumerate(talk):
        if message["role"] != ("user", "assistant")[i % 2]:
            raise TemplateError("Conversation roles must alternate user/assistant/user/...")
    return template(messages)


def count(text: str) -> int:
    return len(text.split())


def words(n: int) -> str:
    return " ".join(["w"] * n)


def turns(num: int, size: int = 10, first: int = 0, prefix: str = "turn") -> list[Turn]:
    """Alternating turns of `size` words, assistant (the greeting) first: ids t0, t1..."""
    roles = ("assistant", "user")
    return [
        Turn(roles[i % 2], f"{prefix}{i} {words(size - 1)}", f"{prefix[0]}{i}")
        for i in range(first, first + num)
    ]


def parts(history: list[Turn] | None = None, retrieved: str = "", stable: str = "") -> PromptParts:
    return PromptParts(
        definition="DEF " + words(19),
        stable=stable,
        history=list(history or []),
        retrieved=retrieved,
        message="MSG " + words(4),
    )


def test_layout_runs_from_the_character_to_the_new_message() -> None:
    p = parts(turns(3), retrieved="RETRIEVED lore", stable="STABLE profile")
    messages = chat_messages(p)
    assert [m["role"] for m in messages] == ["system", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == f"{p.definition}\n\nSTABLE profile"
    assert [m["content"] for m in messages[1:4]] == [t.content for t in p.history]
    assert messages[-1]["content"] == f"RETRIEVED lore\n\n{p.message}"
    prompt = build_prompt(p, template, count, room=1000)
    order = ["DEF", "STABLE", "turn0", "turn1", "turn2", "RETRIEVED", "MSG"]
    positions = [prompt.text.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert prompt.num_tokens == count(prompt.text) and prompt.num_dropped == 0
    assert prompt.first_turn_id == "t0"


def test_empty_sections_leave_no_gaps() -> None:
    messages = chat_messages(PromptParts(definition="DEF", message="MSG"))
    assert messages == [{"role": "system", "content": "DEF"}, {"role": "user", "content": "MSG"}]


def naive_kept(p: PromptParts, room: int) -> int:
    """The reference: drop the oldest turn one at a time until the prompt fits."""
    for keep in range(len(p.history), -1, -1):
        trial = PromptParts(
            p.definition, p.stable, p.history[len(p.history) - keep :], p.retrieved, p.message
        )
        if count(render(trial, template)) <= room:
            return keep
    return 0


@pytest.mark.parametrize("num_turns", [5, 12, 41])
@pytest.mark.parametrize("room", [120, 200, 333])
def test_oldest_history_goes_first_down_to_low_water(num_turns: int, room: int) -> None:
    p = parts(turns(num_turns), retrieved="RETRIEVED " + words(5))
    full = count(render(p, template))
    prompt = build_prompt(p, template, count, room)
    if full <= room:
        assert prompt.num_dropped == 0 and prompt.num_tokens == full
        return
    keep = naive_kept(p, int(room * LOW_WATER))
    assert prompt.num_dropped == num_turns - keep
    assert prompt.num_tokens == count(prompt.text) <= room * LOW_WATER
    kept = p.history[num_turns - keep :]
    assert prompt.first_turn_id == (kept[0].id if kept else None)
    for turn in p.history:
        assert (f"{turn.content}\n" in prompt.text) == (turn in kept), turn.id
    assert all(marker in prompt.text for marker in ("DEF", "RETRIEVED", "MSG"))


def test_the_cut_is_sticky() -> None:
    """After a cut the next turns start at `first_turn_id` and fit without another cut, so
    the prompt up to the end of the kept history stays the same (the prefix cache)."""
    room = 200
    p = parts(turns(21))
    first = build_prompt(p, template, count, room)
    assert first.num_dropped > 0 and first.first_turn_id is not None
    kept = p.history[[t.id for t in p.history].index(first.first_turn_id) :]
    shared = "\n".join([f"system: {p.definition}"] + [f"{t.role}: {t.content}" for t in kept])
    assert first.text.startswith(shared)
    new: list[Turn] = []
    for i in range(50):  # the conversation goes on: the previous message and its reply
        new.append(Turn(("user", "assistant")[i % 2], f"new{i} {words(9)}", f"n{i}"))
        nxt = build_prompt(parts(kept + new), template, count, room)
        if nxt.num_dropped:  # the room is full again: a new cut, again down to LOW_WATER
            assert count(render(parts(kept + new), template)) > room
            assert nxt.num_tokens <= room * LOW_WATER
            break
        assert nxt.first_turn_id == first.first_turn_id
        assert nxt.text.startswith(shared)
    else:
        pytest.fail("the conversation never outgrew the room")
    assert i >= 2  # the cut left room for at least a few turns


def test_retrievals_go_before_the_character_would() -> None:
    p = parts(turns(4), retrieved="RETRIEVED " + words(60))
    room = count(render(parts(), template)) + 30  # the character and message fit, no more
    prompt = build_prompt(p, template, count, room)
    assert "RETRIEVED" not in prompt.text and "DEF" in prompt.text and "MSG" in prompt.text
    assert prompt.num_dropped == 4 and prompt.first_turn_id is None
    assert prompt.num_tokens <= room


def test_a_definition_too_long_for_the_room_says_by_how_much() -> None:
    p = PromptParts(definition=words(300), history=turns(3), message="Hello there you")
    with pytest.raises(PromptTooLong) as caught:
        build_prompt(p, template, count, room=100)
    message = str(caught.value)
    assert "300 tokens" in message and "room for 100" in message and "message 3" in message


def test_a_message_too_long_for_the_room_is_refused() -> None:
    p = PromptParts(definition="DEF", message=words(500))
    with pytest.raises(PromptTooLong, match="new message 500"):
        build_prompt(p, template, count, room=400)


def test_same_roles_in_a_row_merge() -> None:
    messages = [
        {"role": "system", "content": "S"},
        {"role": "assistant", "content": "Hi."},
        {"role": "assistant", "content": "Hello?"},
        {"role": "user", "content": "A"},
        {"role": "user", "content": "B"},
        {"role": "user", "content": "C"},
        {"role": "assistant", "content": "D"},
    ]
    original = [dict(m) for m in messages]
    assert _merge_same_roles(messages) == [
        {"role": "system", "content": "S"},
        {"role": "assistant", "content": "Hi.\n\nHello?"},
        {"role": "user", "content": "A\n\nB\n\nC"},
        {"role": "assistant", "content": "D"},
    ]
    assert messages == original  # the input is not changed


def test_a_deleted_reply_merges_two_user_turns() -> None:
    p = PromptParts("DEF", history=[Turn("user", "Are you there?")], message="Hello?")
    assert chat_messages(p)[1:] == [{"role": "user", "content": "Are you there?\n\nHello?"}]


def test_a_user_first_template_gets_an_opener_before_the_greeting() -> None:
    p = parts(turns(3))
    text = render(p, user_first)
    assert text.startswith(f"system: {p.definition}\nuser: {OPENER}\nassistant: turn0 ")
    assert OPENER not in render(p, template)  # only where the template insists
    prompt = build_prompt(parts(turns(41)), user_first, count, room=200)
    assert 0 < prompt.num_dropped < 41 and prompt.num_tokens <= 200 * LOW_WATER


def test_other_template_errors_are_not_hidden() -> None:
    def broken(messages: list[dict[str, str]]) -> str:
        raise TemplateError("no such filter")

    with pytest.raises(TemplateError, match="no such filter"):
        render(parts(turns(2)[1:]), broken)  # user first: nothing to repair
    with pytest.raises(TemplateError, match="no such filter"):
        render(parts(turns(2)), broken)  # the opener does not help either


def test_a_past_turn_shows_its_context_and_instructions_come_last() -> None:
    history = [
        Turn("user", "Hi", "u1", context="[Memories: - likes tea\n]"),
        Turn("assistant", "Hello"),
    ]
    p = PromptParts("DEF", history=history, retrieved="NEW", message="MSG", instructions="[Terse.]")
    messages = chat_messages(p)
    assert messages[1] == {"role": "user", "content": "[Memories: - likes tea\n]\n\nHi"}
    assert messages[-1] == {"role": "user", "content": "NEW\n\nMSG\n\n[Terse.]"}
    assert build_prompt(p, template, count, 10_000).retrieved == "NEW"

"""Memory across sessions, over HTTP on a real server: what a user says in one session is
in the prompt of a later session with the same character (also after a restart), and
never in another user's; and 16 simultaneous chats neither fail nor leak across users.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import Server, start_server

pytestmark = pytest.mark.slow
CHARACTER = "lumi"


def wait_for_memory(http: httpx.Client, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while http.get("/api/stats").json()["memory_jobs_pending"]:
        assert time.monotonic() < deadline, "memory jobs did not finish"
        time.sleep(0.5)


def say(http: httpx.Client, user: str, session_id: str, content: str) -> dict:
    path = f"/api/sessions/{session_id}/messages?user={user}"
    reply = http.post(path, json={"content": content, "stream": False, "max_tokens": 24})
    assert reply.status_code == 200, reply.text
    return reply.json()


def new_session(http: httpx.Client, user: str) -> str:
    created = http.post("/api/sessions", json={"character": CHARACTER, "user": user})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def prompt_for(http: httpx.Client, user: str, session_id: str, content: str) -> str:
    got = http.get(f"/api/sessions/{session_id}/prompt", params={"content": content, "user": user})
    assert got.status_code == 200, got.text
    return str(got.json()["prompt"])


def test_a_fact_reaches_later_sessions_of_its_user_only(tmp_path: Path) -> None:
    database = tmp_path / "limelight.db"
    server = start_server(database)
    try:
        with server.client() as http:
            first = new_session(http, "alice")
            say(http, "alice", first, "My sister Marguerite lives in Lisbon and keeps bees.")
            say(http, "alice", first, "I am learning to play the cello.")
            wait_for_memory(http)
            memories = http.get(f"/api/characters/{CHARACTER}/memories?user=alice").json()
            assert any("Lisbon" in m["text"] for m in memories)
            later = new_session(http, "alice")
            question = "Where does my sister live these days?"
            assert "Lisbon" in prompt_for(http, "alice", later, question)
            bob = new_session(http, "bob")
            assert "Lisbon" not in prompt_for(http, "bob", bob, question)
            assert http.get(f"/api/characters/{CHARACTER}/memories?user=bob").json() == []
    finally:
        server.stop()
    restarted = start_server(database)
    try:
        with restarted.client() as http:
            again = new_session(http, "alice")
            assert "Lisbon" in prompt_for(http, "alice", again, "Where does my sister live?")
    finally:
        restarted.stop()


async def _chat(server: Server, user: str) -> tuple[str, str]:
    secret = f"codeword-{user}"
    async with httpx.AsyncClient(base_url=server.url, timeout=600) as http:
        created = await http.post("/api/sessions", json={"character": CHARACTER, "user": user})
        assert created.status_code == 201, created.text
        session_id = created.json()["id"]
        sent = await http.post(
            f"/api/sessions/{session_id}/messages?user={user}",
            json={"content": f"Remember my {secret}, please.", "stream": True, "max_tokens": 12},
        )
        assert sent.status_code == 200, sent.text
        assert "event: done" in sent.text
        shown = await http.get(f"/api/sessions/{session_id}?user={user}")
        return secret, shown.text


def test_sixteen_simultaneous_chats_do_not_leak(server: Server, http: httpx.Client) -> None:
    users = [f"user{i:02d}" for i in range(16)]

    async def run_all() -> list[tuple[str, str]]:
        return await asyncio.gather(*(_chat(server, u) for u in users))

    results = asyncio.run(run_all())
    for user, (secret, transcript) in zip(users, results, strict=True):
        assert secret in transcript
        others = [s for s, _ in results if s != secret]
        seen = [o for o in others if o in transcript]
        assert not seen, f"{user} saw another user's words {seen}: {transcript[-600:]}"
    wait_for_memory(http)
    for user in users:
        texts = " ".join(
            m["text"] for m in http.get(f"/api/characters/{CHARACTER}/memories?user={user}").json()
        )
        assert f"codeword-{user}" in texts
        assert not any(f"codeword-{u}" in texts for u in users if u != user)


def test_a_multi_turn_chat_on_a_warm_character_comes_mostly_from_the_cache(
    http: httpx.Client,
) -> None:
    """The prompt layout's point: the definition is shared across users and the history
    across turns, so a turn computes little more than its own new tokens."""
    shares = []
    for user in ("warm-up", "carol"):
        session_id = new_session(http, user)
        for text in (
            "Hi! I'm planning a trip to Norway.",
            "What should I pack?",
            "I love hiking.",
            "Any tips for the fjords?",
        ):
            usage = say(http, user, session_id, text)["usage"]
            shares.append(usage["cached_tokens"] / usage["prompt_tokens"])
    carol = shares[4:]
    assert min(carol) > 0.8, shares  # even her first turn: the character is warm
    assert http.get("/api/stats").json()["prefix_cache_hit_rate"] > 0.5


def test_recalled_memories_stay_with_their_turn_and_are_not_repeated(
    http: httpx.Client,
) -> None:
    """A turn's recalled memories stay in later prompts where they were first shown, so the
    prompt only grows at its end (the cache serves every earlier turn) and a memory the
    history already shows is not recalled again."""
    first = new_session(http, "dora")
    say(http, "dora", first, "My brother Anselm lives in Tromsø and repairs old clocks.")
    wait_for_memory(http)
    later = new_session(http, "dora")
    question = "Do you remember where my brother lives?"
    before = prompt_for(http, "dora", later, question)
    assert "Tromsø" in before.split(question)[0]  # recalled, before the message
    said = say(http, "dora", later, question)
    follow_up = "And what does he repair?"
    after = prompt_for(http, "dora", later, follow_up)
    sent_part = before[: before.index(question) + len(question)]
    assert after.startswith(sent_part)  # the earlier turn exactly as it was sent
    reply = said["message"]["content"]
    assert after.count("Tromsø") == before.count("Tromsø") + reply.count("Tromsø")
    usage = say(http, "dora", later, follow_up)["usage"]
    reply_tokens = said["usage"]["completion_tokens"]
    # new tokens: the previous reply (re-read from text), this message, the template's own
    assert usage["prompt_tokens"] - usage["cached_tokens"] <= reply_tokens + 48, usage

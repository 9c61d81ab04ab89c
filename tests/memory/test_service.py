"""MemoryService against a real SQLite store, with a hashing embedder and scripted model
output: jobs left pending by a crash are done at start, facts supersede with history kept,
ungrounded facts are dropped, users edit and forget, and nothing crosses users."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from limelight.memory.service import MemoryLookupError, MemoryService
from limelight.store import Character, ChatSession, MemoryJob, Message, Store, User
from tests.memory.fakes import HashEmbedder, ScriptedGenerate


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    with store.session() as db:
        db.add_all([User(id="alice"), User(id="bob")])
        db.add(Character(id=1, slug="lumi", name="Lumi", card={"data": {"name": "Lumi"}}))
    return store


def exchange(store: Store, user: str, said: str, reply: str, queue: bool = True) -> list[str]:
    """Append a user message and a reply to the user's session; queue the memory job."""
    with store.session() as db:
        chat = db.query(ChatSession).filter_by(user_id=user).first()
        if chat is None:
            chat = ChatSession(user_id=user, character_id=1)
            db.add(chat)
            db.flush()
        mine = Message(session_id=chat.id, parent_id=chat.leaf_id, role="user", content=said)
        db.add(mine)
        db.flush()
        theirs = Message(session_id=chat.id, parent_id=mine.id, role="assistant", content=reply)
        db.add(theirs)
        db.flush()
        chat.leaf_id = theirs.id
        if queue:
            db.add(MemoryJob(user_id=user, character_id=1, message_ids=[mine.id, theirs.id]))
        return [mine.id, theirs.id]


def facts(*items: tuple[str, str, str]) -> str:
    rows = [
        {"subject": s, "attribute": a, "value": v, "text": f"{s}'s {a} is {v}."}
        for s, a, v in items
    ]
    return json.dumps({"facts": rows})


def run(service: MemoryService) -> None:
    async def go() -> None:
        service.start()
        await service.drain()
        await service.stop()

    asyncio.run(go())


def test_jobs_a_crash_left_pending_are_done_at_start(store: Store) -> None:
    ids = exchange(store, "alice", "My sister Marguerite keeps bees in Lisbon.", "How lovely!")
    service = MemoryService(store, None, HashEmbedder())
    run(service)
    with store.reader() as db:
        assert [j.status for j in db.query(MemoryJob)] == ["done"]
        rows = service.list(db, "alice", 1)
    assert len(rows) == 1 and rows[0].kind == "episode"
    assert "Lisbon" in rows[0].text and set(rows[0].source_ids) <= set(ids)
    assert any("Lisbon" in t for t in service.recall("alice", 1, "where do the bees live", 3))
    assert service.recall("bob", 1, "where do the bees live", 3) == []
    # what the prompt already shows is not recalled again
    assert service.recall("alice", 1, "where do the bees live", 3, visible=ids) == []


def test_a_contradicting_fact_supersedes_and_history_is_kept(store: Store) -> None:
    service = MemoryService(store, None, HashEmbedder())
    service.facts = True
    script = ScriptedGenerate(
        facts(("User", "favourite colour", "green"), ("User", "pet", "a dragon")),
        facts(("User", "favourite colour", "blue")),
    )
    service._generate = script  # type: ignore[method-assign]
    exchange(store, "alice", "My favourite colour is green.", "Green suits you.")
    run(service)
    exchange(store, "alice", "Actually, my favourite colour is blue now.", "Blue it is.")
    run(service)
    with store.reader() as db:
        live = [m for m in service.list(db, "alice", 1) if m.kind == "fact"]
        everything = [m for m in service.list(db, "alice", 1, True) if m.kind == "fact"]
        profile = service.profile(db, "alice", 1)
    assert [m.text for m in live] == ["User's favourite colour is blue."]
    old = next(m for m in everything if "green" in m.text)
    assert old.superseded_by == live[0].id  # kept, pointing at what replaced it
    assert not any("dragon" in m.text for m in everything)  # never said: not grounded
    assert "blue" in profile and "green" not in profile
    assert not any(
        "green" in t
        for t in service.recall("alice", 1, "favourite colour", 10)
        if t.startswith("User's")
    )


def test_users_edit_and_forget_their_memories(store: Store) -> None:
    exchange(store, "alice", "I play the cello on Sundays.", "Wonderful.")
    exchange(store, "bob", "I collect stamps.", "Neat.")
    service = MemoryService(store, None, HashEmbedder())
    run(service)
    with store.session() as db:
        (episode,) = service.list(db, "alice", 1)
        edited = service.update(db, "alice", 1, episode.id, "Alice plays the viola on Sundays.")
        with pytest.raises(MemoryLookupError):
            service.update(db, "bob", 1, edited.id, "stolen")  # not bob's
    assert any("viola" in t for t in service.recall("alice", 1, "sunday music", 5))
    assert not any("cello" in t for t in service.recall("alice", 1, "sunday music", 5))
    with store.session() as db:
        service.delete(db, "alice", 1, edited.id)
    with store.reader() as db:
        assert service.list(db, "alice", 1, include_history=True) == []
        assert len(service.list(db, "bob", 1)) == 1
    assert service.recall("alice", 1, "sunday music", 5) == []

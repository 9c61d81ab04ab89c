"""`MemoryService`: what a character remembers about each user, kept durably, worked on in
the background, recalled on the reply path.

Write path (never on the reply path): the chat stores a `MemoryJob` in the same
transaction as the reply, so an acknowledged exchange is never forgotten, even across a
crash; the worker here turns each pending job into episodes (`episodes.py`: the session's
turns packed with their context, deterministic), facts (schema-constrained extraction by
the engine, kept only when the user's own words state them) and, if enabled, a rolling
summary, then marks the job done.  A fact that contradicts an older one (same subject and
attribute) supersedes it; the old row stays, pointing at the new one.

Read path: `recall` searches an in-RAM `HybridIndex` per (user, character), built from the
store on first use and kept in step by the worker; `profile` is the current facts and the
summary, frozen into a session's prompt when the session starts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import asdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from limelight.engine.async_engine import AsyncEngine
from limelight.engine.types import SamplingParams
from limelight.memory import rows
from limelight.memory.embedder import Embedder, load_embedder
from limelight.memory.episodes import episodes_touched
from limelight.memory.extract import Fact, extract_facts, reconcile_fact
from limelight.memory.index import HybridIndex
from limelight.memory.rows import USER_NAME, Owner
from limelight.memory.summary import update_summary
from limelight.memory.types import MemoryItem, Turn
from limelight.store import Character, Memory, MemoryJob, Message, Store, new_id, utcnow

log = logging.getLogger("limelight.memory")
MAX_INDEXES = 256  # (user, character) indexes kept in RAM, least recently used dropped
PROFILE_FACTS = 12  # facts in a session's frozen profile
FIRST_PERSON = re.compile(r"\b(i|me|my|mine|myself)\b", re.IGNORECASE)


class MemoryLookupError(LookupError):
    """A memory that does not exist for this user and character."""


class MemoryService:
    def __init__(
        self,
        store: Store,
        engine: AsyncEngine | None,
        embedder: str | Embedder | None = None,
        extract_facts: bool = True,
        summarize: bool = False,
    ) -> None:
        self.store, self.engine = store, engine
        self.embedder = (
            embedder
            if isinstance(embedder, Embedder)
            else load_embedder(embedder or "all-minilm-l6-v2")
        )
        self.facts = extract_facts and engine is not None
        self.summarize = summarize and engine is not None
        self._indexes: OrderedDict[Owner, HybridIndex] = OrderedDict()
        self._lock = threading.RLock()  # the indexes are not thread-safe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- the reply path -------------------------------------------------------------------
    def recall(
        self, user_id: str, character_id: int, query: str, k: int, visible: Collection[str] = ()
    ) -> list[str]:
        """The k best memories for `query`, leaving out those whose every source message is
        `visible` (already in the prompt's history): memory brings what the context lacks."""
        names = (USER_NAME,) if FIRST_PERSON.search(query) else ()
        with self._lock:
            index = self._index((user_id, character_id))
            hits = index.search(query, k + len(visible), names=names) if len(index) else []
        seen = set(visible)
        fresh = [i for i, _ in hits if not (i.source_ids and set(i.source_ids) <= seen)]
        return [item.text for item in fresh[:k]]

    def profile(self, db: Session, user_id: str, character_id: int) -> str:
        live = rows.live(user_id, character_id)
        facts = db.scalars(live.where(Memory.kind == "fact").limit(PROFILE_FACTS)).all()
        summary = db.scalar(live.where(Memory.kind == "summary"))
        lines = [f"- {f.text}" for f in facts]
        return "\n".join(([summary.text] if summary else []) + lines)

    def remember(self, db: Session, user_id: str, character_id: int, ids: list[str]) -> None:
        """Queue memory work for an exchange, inside the caller's transaction."""
        db.add(MemoryJob(user_id=user_id, character_id=character_id, message_ids=ids))

    def wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # --- the worker -----------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._idle = asyncio.Event(), asyncio.Event()
        self._wake.set()  # pick up what a crash left pending
        self._task = asyncio.create_task(self._work(), name="limelight-memory")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def drain(self) -> None:
        """Wait until every job queued so far is done."""
        self._idle.clear()
        self._wake.set()
        await self._idle.wait()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while jobs := await asyncio.to_thread(self._pending):
                for job_id in jobs:
                    await self._run(job_id)
            self._idle.set()

    def _pending(self) -> list[int]:
        with self.store.reader() as db:
            query = select(MemoryJob.id).where(MemoryJob.status == "pending")
            return list(db.scalars(query.order_by(MemoryJob.id).limit(32)))

    async def _run(self, job_id: int) -> None:
        try:
            await self._process(job_id)
            status, error = "done", None
        except Exception as err:  # a failed job is kept with its error, never dropped
            log.exception("memory job %s failed", job_id)
            status, error = "failed", f"{type(err).__name__}: {err}"
        await asyncio.to_thread(self._finish, job_id, status, error)

    def _finish(self, job_id: int, status: str, error: str | None) -> None:
        with self.store.session() as db:
            job = db.get(MemoryJob, job_id)
            if job is not None:
                job.status, job.error = status, error

    async def _process(self, job_id: int) -> None:
        exchange = await asyncio.to_thread(self._exchange, job_id)
        if exchange is None:  # its messages were deleted meanwhile
            return
        owner, name, turns, num_new = exchange
        await asyncio.to_thread(self._store_episodes, owner, turns, num_new)
        user_text, reply = turns[-num_new].text, turns[-1].text
        sources = [t.id for t in turns[-num_new:]]
        if self.facts:
            facts = await asyncio.to_thread(extract_facts, self._generate, user_text, reply, name)
            grounded = [f for f in facts if _is_grounded(f, user_text)]
            await asyncio.to_thread(self._store_facts, owner, grounded, sources)
        if self.summarize:
            previous = await asyncio.to_thread(self._summary_text, owner)
            summary = await asyncio.to_thread(
                update_summary, self._generate, previous, user_text, reply, name
            )
            await asyncio.to_thread(self._store_summary, owner, summary, sources)

    def _generate(self, messages: list[dict[str, str]], params: SamplingParams) -> str:
        """Run one engine request from a worker thread (the engine's streams live on the loop)."""
        assert self.engine is not None and self._loop is not None
        prompt = self.engine.tokenizer.apply_chat_template(messages)
        reply = self.engine.generate(prompt, params, background=True)  # replies go first
        future = asyncio.run_coroutine_threadsafe(reply, self._loop)
        return future.result().text

    def _exchange(self, job_id: int) -> tuple[Owner, str, list[Turn], int] | None:
        """The job's owner, character name, its session's turns up to the reply, # new."""
        with self.store.reader() as db:
            job = db.get(MemoryJob, job_id)
            assert job is not None
            character = db.get(Character, job.character_id)
            last = db.get(Message, job.message_ids[-1])
            if character is None or last is None:
                return None
            path: list[Message] = []
            node: Message | None = last
            while node is not None:
                path.append(node)
                node = db.get(Message, node.parent_id) if node.parent_id else None
            turns = [rows.turn(m, character.name) for m in reversed(path)]
            num_new = min(len(job.message_ids), len(turns))
            return (job.user_id, job.character_id), character.name, turns, num_new

    # --- writing rows (worker thread) -----------------------------------------------------
    def _store_episodes(self, owner: Owner, turns: list[Turn], num_new: int) -> None:
        items = episodes_touched(turns, num_new)
        with self.store.session() as db:
            gone = {i.id for i in items if rows.is_replaced(db, i.id)}
            items = [i for i in items if i.id not in gone]  # a user's edit or delete wins
            with self._lock:
                index = self._index(owner, db)
                index.embed(items)
                for item in items:
                    db.merge(rows.to_row(owner, item))
                index.upsert(items)

    def _store_facts(self, owner: Owner, facts: list[Fact], sources: list[str]) -> None:
        with self.store.session() as db:
            known = db.scalars(rows.live(*owner).where(Memory.kind == "fact")).all()
            stored = {r.id: Fact(**r.fact) for r in known if r.fact}
            for fact in facts:
                update = reconcile_fact(fact, stored)
                if update.duplicate_of is not None:
                    continue
                item = fact.to_item(new_id(), sources, utcnow())
                self._add(db, owner, item, key=fact.key, fact=asdict(fact))
                for old_id in update.supersedes:
                    self._supersede(db, owner, old_id, item.id)
                    stored.pop(old_id)
                stored[item.id] = fact

    def _summary_text(self, owner: Owner) -> str:
        with self.store.reader() as db:
            row = db.scalar(rows.live(*owner).where(Memory.kind == "summary"))
            return row.text if row is not None else ""

    def _store_summary(self, owner: Owner, text: str, sources: list[str]) -> None:
        if not text.strip():
            return
        with self.store.session() as db:
            old = db.scalar(rows.live(*owner).where(Memory.kind == "summary"))
            new = Memory(
                user_id=owner[0],
                character_id=owner[1],
                kind="summary",
                text=text,
                source_ids=sources,
                context=[],
                about=[],
            )
            db.add(new)
            db.flush()
            if old is not None:
                old.superseded_by = new.id  # the summary is not indexed: profile() reads it

    def _add(self, db: Session, owner: Owner, item: MemoryItem, **extra: Any) -> None:
        with self._lock:
            index = self._index(owner, db)
            index.embed([item])
            db.add(rows.to_row(owner, item, **extra))
            db.flush()
            index.add([item])

    def _supersede(self, db: Session, owner: Owner, old_id: str, new_id_: str) -> None:
        old = db.get(Memory, old_id)
        assert old is not None
        old.superseded_by = new_id_
        with self._lock:
            self._index(owner, db).remove([old_id])

    # --- management (API) -----------------------------------------------------------------
    def list(
        self, db: Session, user_id: str, character_id: int, include_history: bool = False
    ) -> list[Memory]:
        query = select(Memory).where(Memory.user_id == user_id, Memory.character_id == character_id)
        if not include_history:
            query = query.where(Memory.superseded_by.is_(None))
        return list(db.scalars(query.order_by(Memory.created_at.desc(), Memory.id)))

    def update(
        self, db: Session, user_id: str, character_id: int, memory_id: str, text: str
    ) -> Memory:
        """A user's correction: a new version supersedes the old, which is kept."""
        old = self._read(db, user_id, character_id, memory_id)
        if old.superseded_by is not None:
            raise MemoryLookupError(f"memory {memory_id!r} was replaced by {old.superseded_by!r}")
        owner = (user_id, character_id)
        item = MemoryItem(
            id=new_id(),
            kind=rows.kind(old.kind),
            text=text,
            source_ids=tuple(old.source_ids),
            created_at=utcnow(),
            about=tuple(old.about),
        )
        if old.kind == "summary":
            db.add(rows.to_row(owner, item, key=old.key))
            db.flush()
            old.superseded_by = item.id
        else:
            self._add(db, owner, item, key=old.key, fact=old.fact)
            self._supersede(db, owner, old.id, item.id)
        new = db.get(Memory, item.id)
        assert new is not None
        return new

    def delete(self, db: Session, user_id: str, character_id: int, memory_id: str) -> None:
        """Forget a memory and its earlier versions."""
        doomed = [self._read(db, user_id, character_id, memory_id)]
        for row in doomed:  # grows while it is walked: each version's predecessors
            doomed.extend(db.scalars(select(Memory).where(Memory.superseded_by == row.id)))
        with self._lock:
            self._index((user_id, character_id), db).remove(
                [r.id for r in doomed if r.superseded_by is None and r.kind != "summary"]
            )
        for victim in doomed:
            db.delete(victim)
        db.flush()

    def _read(self, db: Session, user_id: str, character_id: int, memory_id: str) -> Memory:
        row = db.get(Memory, memory_id)
        if row is None or (row.user_id, row.character_id) != (user_id, character_id):
            raise MemoryLookupError(f"no memory {memory_id!r} for this user and character")
        return row

    # --- the in-RAM indexes (call with the lock held) -------------------------------------
    def _index(self, owner: Owner, db: Session | None = None) -> HybridIndex:
        """The owner's index, loaded through `db` if given (a second session inside an open
        transaction would wait for the first's write lock)."""
        if owner in self._indexes:
            self._indexes.move_to_end(owner)
            return self._indexes[owner]
        if db is None:
            with self.store.reader() as own:
                return self._index(owner, own)
        found = db.scalars(rows.live(*owner).where(Memory.kind != "summary")).all()
        items = [rows.to_item(r) for r in found]
        index = HybridIndex(self.embedder)
        index.embed([i for i in items if i.embedding is None])
        index.add(items)
        self._indexes[owner] = index
        while len(self._indexes) > MAX_INDEXES:
            self._indexes.popitem(last=False)
        return index


def _is_grounded(fact: Fact, user_text: str) -> bool:
    """Keep a fact only if the user's message states its value: small models otherwise
    copy the prompt's examples or invent facts, and a wrong memory is worse than none."""
    words = re.findall(r"[^\W_]+", fact.value.lower())
    said = set(re.findall(r"[^\W_]+", user_text.lower()))
    return bool(words) and all(w in said for w in words)

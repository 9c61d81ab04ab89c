"""`ChatService`: a user's turn in, the character's streamed reply out, everything stored.

One reply path serves the product API (a session's message tree) and the OpenAI API
(`character/<slug>`, whose client sends the history): recall memories and lore for the
turn, assemble the prompt (`prompt.py`), stream the engine's tokens, then store the reply
and, in the same transaction, the memory job that the background worker picks up.  The
memory work itself never runs here.  Storage calls run in a worker thread so the event
loop keeps streaming other users' tokens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field, replace
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from limelight.characters import parse_card
from limelight.chat import tree
from limelight.chat.lore import lore_sections
from limelight.chat.persona import USER_NAME, Persona, persona
from limelight.chat.prompt import Prompt, PromptParts, Turn, build_prompt
from limelight.engine.async_engine import AsyncEngine
from limelight.engine.types import SamplingParams
from limelight.store import Character, ChatSession, Message, Store, User, new_id

REPLY_DEFAULTS = SamplingParams(
    temperature=0.8, top_p=0.95, repetition_penalty=1.1, max_tokens=256, stop=[f"\n{USER_NAME}:"]
)
NUM_MEMORIES = 6
WARM_PARAMS = SamplingParams(temperature=0, max_tokens=1)  # a session's opening, computed
log = logging.getLogger(__name__)
API_SESSION_TITLE = "API"  # where OpenAI-API exchanges on a character are recorded


class MemoryRecall(Protocol):
    """What chat needs from long-term memory (implemented by `limelight.memory`)."""

    def profile(self, db: Session, user_id: str, character_id: int) -> str: ...
    def recall(
        self, user_id: str, character_id: int, query: str, k: int, visible: Collection[str] = ()
    ) -> list[str]: ...
    def remember(self, db: Session, user_id: str, character_id: int, ids: list[str]) -> None: ...
    def wake(self) -> None: ...


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens served from the prefix cache


@dataclass(slots=True)
class Delta:
    text: str


@dataclass(slots=True)
class Done:
    message_id: str
    parent_id: str | None
    content: str
    finish_reason: str
    usage: Usage


ReplyEvent = Delta | Done


@dataclass(slots=True)
class ReplyContext:
    """Everything one reply needs, gathered from the store before generation starts."""

    user_id: str
    character_id: int
    persona: Persona
    session_id: str | None  # None: the OpenAI path's session, made when the turn is stored
    parent_id: str | None  # the user message the reply answers; None until it is stored
    history: list[Turn]
    message: str
    profile: str
    anchor_id: str | None = None  # where a new user message goes (its parent)
    api_slug: str | None = None  # the OpenAI path: the character named by `model`
    extra_system: str = ""  # an OpenAI client's own system messages
    recalled: list[str] = field(default_factory=list)
    context: str | None = None  # what was retrieved for the message; None: not yet


class ChatService:
    def __init__(self, store: Store, engine: AsyncEngine, memory: MemoryRecall | None) -> None:
        self.store, self.engine, self.memory = store, engine, memory
        self.tokenizer = engine.tokenizer
        self.max_model_len = engine.engine.max_model_len
        self._personas: dict[tuple[int, object], Persona] = {}

    # --- sessions -------------------------------------------------------------------------
    def start_session(self, db: Session, user_id: str, slug: str) -> ChatSession:
        character = self.character(db, slug)
        ensure_user(db, user_id)
        who = self.persona_of(character)
        seed = new_id()  # `{{random}}` in a greeting is drawn anew for every session
        greetings = [who.macros(g, seed) for g in who.greetings]
        return tree.create_session(
            db, user_id, character.id, greetings, self._profile(db, user_id, character.id)
        )

    async def warm(self, user_id: str, session_id: str) -> None:
        """Compute a new session's opening (the character, this user's profile, the
        greeting) as background work while the user writes, so that the first message
        finds it in the prefix cache and computes little more than itself.  Best effort:
        a failure costs only the head start, and is logged."""
        try:
            text = await asyncio.to_thread(self._opening, user_id, session_id)
            await self.engine.generate(text, WARM_PARAMS, background=True)
        except Exception:
            log.warning("could not warm session %s", session_id, exc_info=True)

    def _opening(self, user_id: str, session_id: str) -> str:
        """The prompt a first message would get, with the message and what it would recall
        left empty: everything before them is the same text (and tokens) as the real one's."""
        with self.store.reader() as db:
            chat = tree.read_session(db, session_id, user_id)
            turn = self._turn(db, chat, self._history(db, chat), "", None)
        turn.context = ""  # nothing to recall for an empty message
        return self._prompt(turn).text

    def character(self, db: Session, slug: str) -> Character:
        row = db.scalar(select(Character).where(Character.slug == slug))
        if row is None:
            raise tree.ChatError(f"no character {slug!r}")
        return row

    def persona_of(self, character: Character) -> Persona:
        key = (character.id, character.updated_at)
        if key not in self._personas:
            self._personas[key] = persona(character.slug, parse_card(character.card).card)
        return self._personas[key]

    # --- replies --------------------------------------------------------------------------
    async def send(
        self, user_id: str, session_id: str, text: str, params: SamplingParams | None = None
    ) -> AsyncIterator[ReplyEvent]:
        if not text.strip():
            raise tree.ChatInputError("the message is empty")
        turn = await asyncio.to_thread(self._turn_for_send, user_id, session_id, text)
        async for event in self._reply(turn, params):
            yield event

    def preview(self, user_id: str, session_id: str, text: str) -> Prompt:
        """The prompt `text` would get as the session's next message; nothing is stored."""
        return self._prompt(self._turn_for_send(user_id, session_id, text))

    async def regenerate(
        self, user_id: str, session_id: str, message_id: str | None, params: SamplingParams | None
    ) -> AsyncIterator[ReplyEvent]:
        """A new reply beside `message_id` (default: the leaf), i.e. another swipe."""
        turn = await asyncio.to_thread(self._turn_for_regenerate, user_id, session_id, message_id)
        async for event in self._reply(turn, params):
            yield event

    async def complete(
        self, user_id: str, slug: str, messages: list[dict[str, str]], params: SamplingParams
    ) -> AsyncIterator[ReplyEvent]:
        """The OpenAI path: the client's history, the character's definition and memory."""
        turn = await asyncio.to_thread(self._turn_for_api, user_id, slug, messages)
        async for event in self._reply(turn, params):
            yield event

    async def _reply(
        self, turn: ReplyContext, params: SamplingParams | None
    ) -> AsyncIterator[ReplyEvent]:
        prompt = await asyncio.to_thread(self._prompt, turn)
        if turn.parent_id is None:  # a new message is stored once its prompt is known to fit
            await asyncio.to_thread(self._store_message, turn)
        params = params or replace(REPLY_DEFAULTS)
        max_tokens = min(params.max_tokens, self.max_model_len - prompt.num_tokens - 1)
        params = replace(params, max_tokens=max(1, max_tokens))
        parts: list[str] = []
        completion, cached, reason = 0, 0, "stop"
        async for delta in self.engine.stream(prompt.text, params):
            cached = cached or delta.num_cached_tokens
            completion += len(delta.token_ids)
            parts.append(delta.text)
            if delta.text:
                yield Delta(delta.text)
            reason = delta.finish_reason or reason
        content = "".join(parts).strip()
        usage = Usage(prompt.num_tokens, completion, cached)
        saved = await asyncio.to_thread(
            self._save_reply, turn, content, usage, prompt.first_turn_id
        )
        yield Done(saved.id, saved.parent_id, content, reason, usage)

    def _prompt(self, turn: ReplyContext) -> Prompt:
        recent = [t.content for t in turn.history[-8:]] + [turn.message]
        constant, triggered = lore_sections(turn.persona.lorebook, recent, self._count)
        if turn.context is None:  # a new message (a regenerated one keeps what it was sent with)
            turn.context = self._retrieve(turn, triggered)
        parts = PromptParts(
            definition=turn.persona.definition,
            stable=_stable(turn.persona.name, turn.profile, constant, turn.extra_system),
            history=turn.history,
            retrieved=turn.context,
            message=turn.message,
            instructions=f"[{turn.persona.post_history}]" if turn.persona.post_history else "",
        )
        room = self.max_model_len - min(REPLY_DEFAULTS.max_tokens, self.max_model_len // 4)
        prompt = build_prompt(parts, self._template, self._count, room)
        turn.context = prompt.retrieved  # "" when there was no room for it
        return prompt

    def _retrieve(self, turn: ReplyContext, triggered_lore: str) -> str:
        """Memories and lore for the new message that the history does not already show:
        an earlier turn's context stays in the prompt, so only what is new is added."""
        shown = "\n".join(t.context for t in turn.history)
        if self.memory is not None:
            visible = {t.id for t in turn.history if t.id}  # episodes of turns in the prompt
            recalled = self.memory.recall(
                turn.user_id, turn.character_id, turn.message, NUM_MEMORIES, visible
            )
            turn.recalled = [m for m in recalled if f"\n- {m}\n" not in f"\n{shown}\n"]
        lore = "" if triggered_lore and _retrieved([], triggered_lore) in shown else triggered_lore
        return _retrieved(turn.recalled, lore)

    def _template(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)

    def _count(self, text: str) -> int:
        return len(self.tokenizer.encode_prompt(text))

    # --- storage (worker thread) ----------------------------------------------------------
    def _turn_for_send(self, user_id: str, session_id: str, text: str) -> ReplyContext:
        with self.store.reader() as db:
            chat = tree.read_session(db, session_id, user_id)
            turn = self._turn(db, chat, self._history(db, chat), text, None)
            turn.anchor_id = chat.leaf_id
            return turn

    def _turn_for_regenerate(
        self, user_id: str, session_id: str, message_id: str | None
    ) -> ReplyContext:
        with self.store.reader() as db:
            chat = tree.read_session(db, session_id, user_id)
            target = tree.read_message(db, chat, message_id or chat.leaf_id or "")
            if target.role == "assistant":
                if target.parent_id is None:
                    raise tree.ChatInputError("a greeting is swiped, not regenerated")
                target = tree.read_message(db, chat, target.parent_id)
            history = self._history(db, chat, target.parent_id) if target.parent_id else []
            turn = self._turn(db, chat, history, target.content, target.id)
            turn.context = target.context  # the same prompt, served from the cache (None: anew)
            return turn

    def _turn_for_api(
        self, user_id: str, slug: str, messages: list[dict[str, str]]
    ) -> ReplyContext:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        talk = [m for m in messages if m["role"] in ("user", "assistant")]
        if not talk or talk[-1]["role"] != "user":
            raise tree.ChatInputError("the last message must be the user's")
        history = [Turn(m["role"], m["content"]) for m in talk[:-1]]
        with self.store.reader() as db:
            character = self.character(db, slug)
            chat = self._api_session(db, user_id, character.id)
            profile = chat.profile if chat else self._profile(db, user_id, character.id)
            return ReplyContext(
                user_id=user_id,
                character_id=character.id,
                persona=self.persona_of(character),
                session_id=None,
                parent_id=None,
                history=history,
                message=talk[-1]["content"],
                profile=profile,
                api_slug=slug,
                extra_system=system,
            )

    def _api_session(self, db: Session, user_id: str, character_id: int) -> ChatSession | None:
        """The session that records a user's OpenAI-API exchanges with a character."""
        query = select(ChatSession).where(
            ChatSession.user_id == user_id,
            ChatSession.character_id == character_id,
            ChatSession.title == API_SESSION_TITLE,
        )
        return db.scalar(query)

    def _profile(self, db: Session, user_id: str, character_id: int) -> str:
        return self.memory.profile(db, user_id, character_id) if self.memory else ""

    def _store_message(self, turn: ReplyContext) -> None:
        """Store the turn's new user message; the OpenAI path's session is made if new."""
        with self.store.session() as db:
            if turn.api_slug is not None:
                ensure_user(db, turn.user_id)
                chat = self._api_session(db, turn.user_id, turn.character_id)
                if chat is None:
                    chat = tree.create_session(db, turn.user_id, turn.character_id, [])
                    chat.title, chat.profile = API_SESSION_TITLE, turn.profile
                anchor = chat.leaf_id
            else:
                assert turn.session_id is not None
                chat = tree.read_session(db, turn.session_id, turn.user_id)
                anchor = turn.anchor_id
            message = tree.add_message(db, chat, "user", turn.message, anchor)
            message.context = turn.context
            turn.session_id, turn.parent_id = chat.id, message.id

    def _history(self, db: Session, chat: ChatSession, leaf_id: str | None = None) -> list[Turn]:
        messages = tree.path(db, chat, leaf_id) if (leaf_id or chat.leaf_id) else []
        ids = [m.id for m in messages]
        start = ids.index(chat.history_start_id) if chat.history_start_id in ids else 0
        return [Turn(m.role, m.content, m.id, m.context or "") for m in messages[start:]]

    def _turn(
        self, db: Session, chat: ChatSession, history: list[Turn], text: str, parent: str | None
    ) -> ReplyContext:
        character = db.get(Character, chat.character_id)
        assert character is not None
        return ReplyContext(
            user_id=chat.user_id,
            character_id=character.id,
            persona=self.persona_of(character),
            session_id=chat.id,
            parent_id=parent,
            history=history,
            message=text,
            profile=chat.profile,
        )

    def _save_reply(
        self, turn: ReplyContext, content: str, usage: Usage, first_id: str | None
    ) -> Message:
        with self.store.session() as db:
            chat = db.get(ChatSession, turn.session_id or "")
            if chat is None:  # deleted while the reply was written
                raise tree.ChatError(f"no session {turn.session_id!r}")
            reply = tree.add_message(db, chat, "assistant", content, turn.parent_id)
            reply.prompt_tokens = usage.prompt_tokens
            reply.cached_tokens = usage.cached_tokens
            reply.completion_tokens = usage.completion_tokens
            if first_id is not None and chat.title != API_SESSION_TITLE:
                chat.history_start_id = first_id  # the cut stays put for the next turns
            if self.memory is not None and turn.parent_id is not None:
                self.memory.remember(
                    db, turn.user_id, turn.character_id, [turn.parent_id, reply.id]
                )
        if self.memory is not None:
            self.memory.wake()
        return reply


def ensure_user(db: Session, user_id: str) -> None:
    if db.get(User, user_id) is None:
        db.add(User(id=user_id))
        db.flush()


def _stable(name: str, profile: str, constant_lore: str, extra_system: str) -> str:
    sections = [
        f"What {name} knows about {USER_NAME} from earlier conversations:\n{profile}"
        if profile
        else "",
        constant_lore,
        extra_system,
    ]
    return "\n\n".join(s for s in sections if s)


def _retrieved(memories: list[str], lore: str) -> str:
    sections = [
        f"[Memories of earlier conversations with {USER_NAME}:\n"
        + "".join(f"- {m}\n" for m in memories)
        + "]"
        if memories
        else "",
        f"[Background: {lore}]" if lore else "",
    ]
    return "\n".join(s for s in sections if s)

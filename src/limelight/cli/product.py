"""Product commands: `serve`, `chat CHARACTER`, `characters list|import`, `keys create`.

`chat CHARACTER` runs the same `ChatService` and memory worker as the server, in this
process: it continues the user's latest session with the character (or a new one with
`--new`), streams the reply, and the memories it forms persist in the store for the next
run and for the server.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from limelight.store import Store

if TYPE_CHECKING:
    from limelight.chat import ChatService

if TYPE_CHECKING:
    from limelight.server.settings import Settings

MEMORY_DRAIN_SECONDS = 120  # at exit, time given to the memory worker to finish its jobs


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from limelight.server.app import create_app
    from limelight.server.settings import Settings

    given = {
        "host": args.host,
        "port": args.port,
        "model": args.model,
        "database_url": args.database,
    }
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    _check_keys(settings)
    print(f"limelight: serving {settings.model} on http://{settings.host}:{settings.port}/")
    if settings.compile:
        print("limelight: compiling decode steps first (~15 s; the first time ~1.5 min)")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    return 0


def _check_keys(settings: Settings) -> None:
    """`build_services` refuses an open server too, but inside uvicorn's start-up, which
    prints the refusal as a traceback; checked here first, it is one line."""
    from limelight.server import auth
    from limelight.server.app import ServeError

    if settings.is_loopback:
        return
    store = Store(settings.database_url)
    try:
        with store.session() as db:
            if not auth.keys_required(db):
                raise ServeError(
                    f"refusing to serve on {settings.host} without API keys: create one with "
                    "`limelight keys create USER`, or serve on 127.0.0.1"
                )
    finally:
        store.close()


def characters(args: argparse.Namespace) -> int:
    from limelight.characters import library
    from limelight.store import Character

    store = Store(args.database)
    with store.session() as db:
        library.install_defaults(db)
        if args.action == "import":
            path = Path(args.file)
            row, warnings = library.import_file(db, path.read_bytes(), path.name)
            for warning in warnings:
                print(f"warning: {warning}")
            print(f"imported {row.name!r} as {row.slug}")
            return 0
        for row in db.query(Character).order_by(Character.slug):
            print(f"{row.slug:28} {row.name}")
    return 0


def keys(args: argparse.Namespace) -> int:
    from limelight.server.auth import create_key

    with Store(args.database).session() as db:
        key = create_key(db, args.user, args.name)
    print(key)
    print(f"(the key for user {args.user!r}; it is stored only as a hash and not shown again)")
    return 0


def chat(args: argparse.Namespace) -> int:
    return asyncio.run(_chat(args))


async def _chat(args: argparse.Namespace) -> int:
    from limelight.characters import library
    from limelight.chat import ChatService, Delta
    from limelight.engine.async_engine import AsyncEngine
    from limelight.engine.types import SamplingParams
    from limelight.memory.service import MemoryService

    store = Store(args.database)
    with store.session() as db:
        library.install_defaults(db)
    engine = AsyncEngine.from_pretrained(
        args.model, kv_cache_bytes=128 << 20, dtype="bfloat16", quantization="int4"
    )
    memory = MemoryService(store, engine)
    service = ChatService(store, engine, memory)
    memory.start()
    try:
        session_id = _open_session(service, store, args)
        params = SamplingParams(
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            seed=args.seed,
            top_p=0.95,
            repetition_penalty=1.1,
            stop=["\nUser:"],
        )
        while (line := await asyncio.to_thread(_read_line)) is not None:
            async for event in service.send(args.user, session_id, line, params):
                if isinstance(event, Delta):
                    print(event.text, end="", flush=True)
            print()
        print("(saving memories...)")
        await asyncio.wait_for(memory.drain(), MEMORY_DRAIN_SECONDS)
    finally:
        await memory.stop()
        engine.shutdown()
    return 0


def _open_session(service: ChatService, store: Store, args: argparse.Namespace) -> str:
    from limelight.chat import tree
    from limelight.store import ChatSession

    with store.session() as db:
        character = service.character(db, args.character)
        latest = (
            db.query(ChatSession)
            .filter_by(user_id=args.user, character_id=character.id)
            .order_by(ChatSession.updated_at.desc())
            .first()
        )
        chat = (
            service.start_session(db, args.user, args.character)
            if (args.new or latest is None or latest.title == "API")
            else latest
        )
        print(f"Talking with {character.name}. An empty line or Ctrl-D ends the chat.")
        for message in tree.path(db, chat)[-6:]:
            who = "you" if message.role == "user" else character.name
            print(f"{who}> {message.content}")
        return chat.id


def _read_line() -> str | None:
    try:
        line = input("you> ").strip()
    except EOFError:
        return None
    return line or None

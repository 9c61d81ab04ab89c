"""`create_app`: the FastAPI application, its services and its routes.

At start-up the app opens the store (migrating it), installs the built-in characters the
first time, loads the model into an `AsyncEngine`, loads the default voice and starts the
memory worker; at shutdown it stops them in reverse.  `limelight serve` runs it under uvicorn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from limelight.characters.library import install_defaults
from limelight.chat import ChatService
from limelight.engine.async_engine import AsyncEngine
from limelight.server import auth, errors
from limelight.server.deps import Services
from limelight.server.limits import BodyLimit
from limelight.server.routes import (
    audio,
    characters,
    me,
    memories,
    openai,
    sessions,
    stats,
    voices,
)
from limelight.server.settings import Settings
from limelight.server.speech import VoiceWorker
from limelight.store import Store

STATIC = Path(__file__).parent / "static"  # the web app: plain HTML, CSS and JS


class ServeError(RuntimeError):
    """The server cannot start as configured; the message says what to change."""


def build_services(settings: Settings) -> Services:
    store = Store(settings.database_url)
    with store.session() as db:
        if not settings.is_loopback and not auth.keys_required(db):
            raise ServeError(
                f"refusing to serve on {settings.host} without API keys: create one with "
                "`limelight keys create USER`, or serve on 127.0.0.1"
            )
        install_defaults(db)
    engine = AsyncEngine.from_pretrained(settings.model, **settings.engine_options)
    memory = None
    if settings.memory:
        from limelight.memory.service import MemoryService

        memory = MemoryService(
            store, engine, settings.embedder, settings.memory_facts, settings.memory_summaries
        )
    voice = None
    if settings.voice:
        voice = VoiceWorker(settings.tts_threads, settings.stt_threads)
        voice.warm_up()
    return Services(
        settings=settings,
        store=store,
        engine=engine,
        model_name=settings.model,
        chat=ChatService(store, engine, memory),
        memory=memory,
        embedder=memory.embedder if memory is not None else None,
        voice=voice,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = build_services(settings)
        app.state.services = svc
        if svc.memory is not None:
            svc.memory.start()
        try:
            yield
        finally:
            if svc.memory is not None:
                await svc.memory.stop()
            if svc.voice is not None:
                svc.voice.shutdown()
            svc.engine.shutdown()
            svc.store.close()

    app = FastAPI(title="limelight", version="0.1.0", lifespan=lifespan)
    errors.install(app)
    for module in (openai, audio, characters, sessions, memories, voices, stats, me):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.add_middleware(
        BodyLimit,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    return app

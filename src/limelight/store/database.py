"""`Store`: the database connection, its settings and its migrations.

SQLite in WAL mode is the embedded default (a file under the user's data directory);
any SQLAlchemy URL works, PostgreSQL included.  Opening a store brings its schema to the
newest Alembic revision, so a new release upgrades an old file in place.  On SQLite,
`synchronous=FULL` makes every commit durable before it returns: a memory acknowledged as
written survives a crash.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from platformdirs import user_data_dir
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


class StoreError(RuntimeError):
    """The database cannot be opened or migrated; the message names the URL."""


def default_url() -> str:
    """`LIMELIGHT_DATABASE_URL`, else `limelight.db` in the user's data directory."""
    if url := os.environ.get("LIMELIGHT_DATABASE_URL"):
        return url
    folder = Path(user_data_dir("limelight", appauthor=False))
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'limelight.db'}"


class Store:
    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = _create_engine(self.url)
        try:
            upgrade(self.engine)
        except SQLAlchemyError as err:
            raise StoreError(f"cannot open the database {self.url}: {err}") from err
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        reading = self.engine.execution_options(limelight_reader=True)
        self._readers = sessionmaker(reading, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back if it raises.

        On SQLite it holds the write lock from its start, so keep it short, and open no
        other `session()` inside it (that one would wait for this one's lock)."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only unit of work: a snapshot that never waits for writers (WAL)."""
        with self._readers.begin() as session:  # its commit ends the snapshot; nothing to write
            yield session

    def close(self) -> None:
        self.engine.dispose()


def upgrade(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _create_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    if url.startswith("sqlite:///") and ":memory:" not in url:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=16,
        max_overflow=48,  # writers queue on the lock, not on the pool
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _begin_immediate(connection: Any) -> None:
    """Writers take the write lock when their transaction begins, not when they first
    write: a deferred transaction that read and then writes fails at once ("database is
    locked") when another writer got in between, whereas BEGIN IMMEDIATE waits its turn.
    Readers (`Store.reader`) begin deferred and never wait."""
    reader = connection.get_execution_options().get("limelight_reader", False)
    connection.exec_driver_sql("BEGIN" if reader else "BEGIN IMMEDIATE")


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    connection.isolation_level = None  # the driver's own implicit BEGIN is off; see above
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()

"""The store: migrations match the ORM schema, SQLite runs in WAL mode, data survives."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from limelight.store import Base, Character, Store, StoreError, User
from tests.store.postgres import postgres_url


def test_migrated_schema_equals_the_tables(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_sqlite_is_in_wal_mode_with_durable_commits(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_rows_survive_reopening_and_a_failed_unit_of_work_writes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'a.db'}"
    store = Store(url)
    with store.session() as session:
        session.add(User(id="alice"))
        session.add(Character(slug="ada", name="Ada", card={"spec": "chara_card_v3"}))
    with pytest.raises(RuntimeError), store.session() as session:
        session.add(User(id="bob"))
        raise RuntimeError("boom")
    store.close()
    reopened = Store(url)
    with reopened.session() as session:
        assert session.scalars(select(User.id)).all() == ["alice"]
        character = session.scalars(select(Character)).one()
        assert character.card == {"spec": "chara_card_v3"}


def test_an_unusable_database_is_named(tmp_path: Path) -> None:
    (tmp_path / "not-a-db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not-a-db"):
        Store(f"sqlite:///{tmp_path / 'not-a-db'}")


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_url() as url:
        if url is None:
            pytest.skip("no PostgreSQL: set LIMELIGHT_TEST_POSTGRES_URL or install postgresql")
        yield url


def test_postgres_migrates_and_keeps_rows(postgres: str) -> None:
    store = Store(postgres)
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    with store.session() as session:
        session.add(User(id="carol"))
        session.add(Character(slug="pg", name="Pg", card={"data": {"name": "Pg"}}))
    store.close()
    with Store(postgres).session() as session:
        assert "carol" in session.scalars(select(User.id)).all()
        assert session.scalars(select(Character.card)).first() == {"data": {"name": "Pg"}}

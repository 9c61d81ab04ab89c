"""The product commands (`characters`, `keys`, `serve`) as a user runs them: a subprocess
on a temporary store, errors as one line and never a traceback."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

SHARED_CARDS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cards"


def limelight(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "limelight", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'limelight.db'}"


def test_characters_import_and_list(database: str) -> None:
    card = SHARED_CARDS / "st_default_Seraphina.png"
    result = limelight("characters", "import", str(card), "--database", database)
    assert result.returncode == 0, result.stderr
    assert "imported 'Seraphina' as seraphina" in result.stdout
    listed = limelight("characters", "list", "--database", database)
    assert listed.returncode == 0, listed.stderr
    slugs = [line.split()[0] for line in listed.stdout.splitlines()]
    assert "seraphina" in slugs and len(slugs) == 7  # the six built-ins and Seraphina


@pytest.mark.parametrize(
    ("path", "words"),
    [
        (SHARED_CARDS / "choral_invalid-character.png", "holds no character card"),
        (SHARED_CARDS / "no-such-card.png", "No such file"),
        (SHARED_CARDS, "Is a directory"),
    ],
)
def test_a_bad_import_is_one_clear_line(database: str, path: Path, words: str) -> None:
    result = limelight("characters", "import", str(path), "--database", database)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("limelight: error:") and words in line


def test_keys_create_prints_a_key_stored_only_as_its_hash(database: str) -> None:
    result = limelight("keys", "create", "dana", "--name", "laptop", "--database", database)
    assert result.returncode == 0, result.stderr
    key = result.stdout.splitlines()[0]
    assert key.startswith("ll-") and len(key) > 30 and "'dana'" in result.stdout
    with sqlite3.connect(database.removeprefix("sqlite:///")) as db:
        rows = db.execute("SELECT user_id, name, key_hash FROM api_keys").fetchall()
    assert len(rows) == 1 and rows[0][:2] == ("dana", "laptop") and key not in rows[0][2]
    again = limelight("keys", "create", "dana", "--database", database)
    assert again.returncode == 0 and again.stdout.splitlines()[0] != key  # a second key


def test_serve_beyond_loopback_without_keys_is_one_clear_line(database: str) -> None:
    result = limelight("serve", "--host", "0.0.0.0", "--port", "9", "--database", database)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "without API keys" in result.stderr and "limelight keys create USER" in result.stderr


def chat(database: str, lines: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "limelight",
            "chat",
            "lumi",
            "--user",
            "erin",
            "--max-tokens",
            "8",
            "--database",
            database,
        ],
        input=lines,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_chat_with_a_character_streams_and_continues_across_runs(database: str) -> None:
    first = chat(database, "My cat is called Miso.\n\n")
    assert first.returncode == 0, first.stderr
    assert "Talking with Lumi" in first.stdout and "Traceback" not in first.stderr
    second = chat(database, "")  # the next run shows the conversation so far
    assert second.returncode == 0, second.stderr
    assert "you> My cat is called Miso." in second.stdout
    with sqlite3.connect(database.removeprefix("sqlite:///")) as db:
        jobs = db.execute("SELECT status FROM memory_jobs").fetchall()
        memories = db.execute("SELECT text FROM memories WHERE user_id = 'erin'").fetchall()
    assert jobs == [("done",)]  # the memory work finished before the first run ended
    assert any("Miso" in text for (text,) in memories)

"""Fixtures for the characters tests: the shared real-world data set (cards, World Info)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# The repository's root is two folders up; shared/ sits beside the repository checkout.
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """shared/data beside the repository.  Missing data fails the tests, never skips them."""
    folder = SHARED_DATA.resolve()
    assert (folder / "cards" / "MANIFEST.json").is_file(), (
        f"shared test data not found at {folder}: check out shared/ beside the repository"
    )
    return folder


@pytest.fixture(scope="session")
def manifest(shared_data: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((shared_data / "cards" / "MANIFEST.json").read_text())
    return rows

"""Imports point down only: server → product packages → store / engine.

The engine's own rules (layers and models below the engine) are in
tests/engine/test_layering.py; these are the rules between the packages above it.
"""

from pathlib import Path

import pytest

import limelight
from tests.engine.test_layering import imports

PACKAGE = Path(limelight.__file__).parent
# what each package may import of limelight (besides itself)
ALLOWED = {
    "store": set(),
    "characters": {"engine", "store"},
    "memory": {"engine", "store"},
    "chat": {"engine", "store", "characters"},
    "voice": set(),
    "server": {"engine", "store", "characters", "chat", "memory", "voice"},
}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down(package: str) -> None:
    files = list((PACKAGE / package).rglob("*.py"))
    assert files
    for path in files:
        for name in imports(path):
            parts = name.split(".")
            if len(parts) < 2 or parts[1] == package:
                continue
            assert parts[1] in ALLOWED[package], f"{path} imports {name}"

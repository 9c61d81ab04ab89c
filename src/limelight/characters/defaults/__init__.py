"""limelight's own starter characters, shipped as package data.

Each character is a Character Card V3 JSON file (`<slug>.json`) with an avatar beside it
(`<slug>.png`, drawn by `make_avatars.py`) and a voice profile in
`extensions.limelight.voice`.  All were written for limelight.  This module only finds and
reads them; storing them is the caller's business.
"""

from __future__ import annotations

from importlib import resources

from limelight.characters.files import ImportedCard, read_card_file

DEFAULT_SLUGS = (
    "lumi", "juniper-vale", "osric-thorne", "vesper-9", "odile-fairweather", "rhea-castellanos",
)  # fmt: skip


def default_characters() -> list[ImportedCard]:
    """The starter characters in a fixed order (the assistant, Lumi, first), with avatars."""
    folder = resources.files(__name__)
    characters = []
    for slug in DEFAULT_SLUGS:
        card_file = f"{slug}.json"
        imported = read_card_file(folder.joinpath(card_file).read_bytes(), card_file)
        avatar = folder.joinpath(f"{slug}.png").read_bytes()
        characters.append(
            ImportedCard(imported.card, imported.warnings, avatar, format=imported.format)
        )
    return characters

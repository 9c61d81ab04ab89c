"""limelight's starter characters: complete, distinct, with avatars and voices."""

from __future__ import annotations

import io
import re

from PIL import Image

from limelight.characters import (
    ImportedCard,
    default_characters,
    export_png,
    read_card_file,
    scan_lorebook,
    slugify,
)
from limelight.characters.defaults import DEFAULT_SLUGS

VOICE_KEYS = {"backend", "voice", "rate", "pitch", "variability"}


def test_at_least_five_complete_characters() -> None:
    characters = default_characters()
    assert len(characters) >= 5
    assert [slugify(c.card.name) for c in characters] == list(DEFAULT_SLUGS)
    for imported in characters:
        card = imported.card
        assert imported.warnings == [], card.name
        for field in ("description", "personality", "scenario", "first_mes", "mes_example"):
            assert getattr(card, field).strip(), (card.name, field)
        assert card.alternate_greetings and card.tags and card.creator == "limelight"
        assert card.mes_example.startswith("<START>\n")
        assert re.search(r"\{\{user\}\}: .+\n\{\{char\}\}: ", card.mes_example)
    assert len({c.card.description for c in characters}) == len(characters)


def test_avatars_are_small_square_pngs() -> None:
    for imported in default_characters():
        assert imported.avatar is not None
        assert len(imported.avatar) < 60_000
        image = Image.open(io.BytesIO(imported.avatar))
        assert image.format == "PNG" and image.size == (256, 256)
        image.verify()
    avatars = [c.avatar for c in default_characters()]
    assert len(set(avatars)) == len(avatars)


def voice(imported: ImportedCard) -> dict[str, object]:
    profile = imported.card.extensions["limelight"]["voice"]
    assert isinstance(profile, dict)
    return profile


def test_every_character_has_its_own_voice() -> None:
    voices = [voice(c) for c in default_characters()]
    for profile in voices:
        assert set(profile) == VOICE_KEYS
        assert profile["backend"] in ("piper", "espeak")
        assert isinstance(profile["voice"], str) and profile["voice"]
        for key in ("rate", "pitch", "variability"):
            assert isinstance(profile[key], float)
    settings = {(v["backend"], v["voice"], v["rate"], v["pitch"], v["variability"]) for v in voices}
    assert len(settings) == len(voices)  # how different they sound: tests/voice
    assert {v["backend"] for v in voices} == {"piper", "espeak"}


def test_osric_lorebook_works() -> None:
    osric = next(c for c in default_characters() if c.card.name == "Osric Thorne")
    book = osric.card.character_book
    assert book is not None and len(book.entries) >= 5
    result = scan_lorebook(book, ["Is a storm coming tonight?"], lambda s: len(s.split()))
    assert result.activations[0].entry.comment == "Storm coming"
    quiet = scan_lorebook(book, ["I like storms."], lambda s: len(s.split()))
    assert "Storm coming" not in [a.entry.comment for a in quiet.activations]


def test_defaults_survive_png_export() -> None:
    for imported in default_characters():
        back = read_card_file(export_png(imported.card, imported.avatar))
        assert back.card == imported.card
        assert back.avatar == imported.avatar

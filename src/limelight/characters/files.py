"""Card files in and out: PNG (`chara`/`ccv3` chunks), CHARX (zip) and plain JSON.

`read_card_file` tells the format from the bytes themselves (PNG signature, zip signature,
JSON text), never from the file name, which only labels error messages.  In a PNG the V3
`ccv3` chunk wins over the V2 `chara` chunk; a damaged winner falls back to the other with
a warning.  Exporters write V3 JSON; a PNG carries both chunks so V2-only apps still read
it.  Limits on input size are module constants; the containers have their own (`png.py`,
`charx.py`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from limelight.characters import charx, png
from limelight.characters.card import SPEC_V2, SPEC_V3, CharacterCard
from limelight.characters.errors import CardError
from limelight.characters.parse import ParsedCard, parse_card

MAX_FILE_BYTES = 64 * 2**20
MAX_JSON_BYTES = charx.MAX_CARD_JSON_BYTES
CardFormat = Literal["png", "charx", "json"]


@dataclass(frozen=True, slots=True)
class ImportedCard:
    """A card read from a file: the card, repairs made, its avatar (PNG) and other assets."""

    card: CharacterCard
    warnings: list[str] = field(default_factory=list)
    avatar: bytes | None = None
    assets: dict[str, bytes] = field(default_factory=dict)  # every CHARX file but card.json
    format: CardFormat = "json"


def read_card_file(data: bytes, filename: str | None = None) -> ImportedCard:
    """PNG, CHARX or JSON bytes → ImportedCard; CardError (naming the file) otherwise."""
    label = filename or "the file"
    try:
        if len(data) > MAX_FILE_BYTES:
            raise CardError(f"it is {len(data):,} bytes, over the {MAX_FILE_BYTES:,} byte limit")
        if png.is_png(data):
            return _read_png(data)
        if charx.is_zip(data):
            return _read_charx(data)
        if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
            parsed = parse_card(_load_json(data))
            return ImportedCard(parsed.card, parsed.warnings, format="json")
        raise CardError("unknown format: expected a PNG card, a CHARX (zip) or JSON")
    except CardError as error:
        raise CardError(f"{label}: {error}") from error


def export_json(card: CharacterCard) -> bytes:
    """The card as Character Card V3 JSON (UTF-8)."""
    return json.dumps(card.to_v3(), ensure_ascii=False, indent=2).encode()


def export_png(card: CharacterCard, avatar: bytes | None) -> bytes:
    """A PNG card: the avatar (or a plain generated image) with V2 `chara` and V3 `ccv3`."""
    image = png.as_png(avatar) if avatar is not None else png.plain_avatar(card.name)
    chunks = {"chara": png.encode_chunk(card.to_v2()), "ccv3": png.encode_chunk(card.to_v3())}
    return png.write_card_chunks(image, chunks)


def export_charx(
    card: CharacterCard, avatar: bytes | None, assets: Mapping[str, bytes] | None = None
) -> bytes:
    """A CHARX: card.json, `assets` as given, and the avatar as the card's main icon."""
    files = dict(assets or {})
    if avatar is not None:
        icon = png.strip_card_chunks(png.as_png(avatar))
        files[_icon_path(card) or charx.DEFAULT_ICON_PATH] = icon
    return charx.write_charx(card.to_v3(), files)


def _load_json(data: bytes) -> object:
    if len(data) > MAX_JSON_BYTES:
        raise CardError(f"the JSON is over the {MAX_JSON_BYTES:,} byte limit")
    try:
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise CardError(f"the JSON is not UTF-8 text ({error})") from error
    except json.JSONDecodeError as error:
        raise CardError(f"not valid JSON: {error}") from error


def _read_png(data: bytes) -> ImportedCard:
    chunks, avatar = png.read_card_chunks(data)
    if not chunks:
        raise CardError("this PNG holds no character card (no 'chara' or 'ccv3' text chunk)")
    warnings: list[str] = []
    parsed: ParsedCard | None = None
    first_error: CardError | None = None
    for name in png.CARD_CHUNKS:  # ccv3 first
        if name not in chunks:
            continue
        try:
            obj = png.decode_chunk(name, chunks[name])
            _check_chunk_spec(name, obj, warnings)
            if parsed is None:
                parsed = parse_card(obj)
        except CardError as error:
            first_error = first_error or error
            warnings.append(f"the '{name}' chunk is unusable: {error}")
    if parsed is None:
        assert first_error is not None
        raise first_error
    return ImportedCard(parsed.card, warnings + parsed.warnings, avatar, format="png")


def _check_chunk_spec(name: str, obj: object, warnings: list[str]) -> None:
    spec = obj.get("spec") if isinstance(obj, dict) else None
    expected = SPEC_V3 if name == "ccv3" else SPEC_V2
    if spec == SPEC_V3 and name == "chara":
        warnings.append(f"the 'chara' chunk holds a {SPEC_V3} card; the spec puts V2 there")
    elif spec != expected and name == "ccv3":
        warnings.append(f"the 'ccv3' chunk holds a {spec or 'V1'} card, not {SPEC_V3}")


def _read_charx(data: bytes) -> ImportedCard:
    obj, files = charx.read_charx(data)
    parsed = parse_card(obj)
    path = _icon_path(parsed.card)
    if path is None or path not in files:
        path = next((p for p in sorted(files) if p.startswith("assets/icon/")), None)
    avatar = files.get(path) if path is not None else None
    if avatar is not None:
        avatar = png.as_png(avatar)
    return ImportedCard(parsed.card, parsed.warnings, avatar, files, format="charx")


def _icon_path(card: CharacterCard) -> str | None:
    """Where the card's main icon lives inside a CHARX, if its assets say so."""
    icons = [a for a in card.assets or [] if a.type == "icon" and a.embedded_path]
    main = [a for a in icons if a.name == "main"] or icons
    return main[0].embedded_path if main else None

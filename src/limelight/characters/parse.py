"""`parse_card`: Character Card V1, V2 or V3 JSON → one `CharacterCard`, plus warnings.

Real cards break the specs, and a card that can be read is read: a V1 card without `spec`,
a V3 card missing `group_only_greetings`, `null` where a string belongs.  Each repair is a
warning string naming the field; only input that holds no card at all raises `CardError`.
Which PNG chunk a card came from is `files.py`'s business, not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from limelight.characters.card import (
    ASSET_FIELDS,
    ENVELOPE,
    SPEC_V2,
    SPEC_V3,
    TEXT_FIELDS,
    V1_FIELDS,
    V2_FIELDS,
    V3_FIELDS,
    V3_REQUIRED,
    Asset,
    CharacterCard,
)
from limelight.characters.errors import CardError
from limelight.characters.fields import FieldReader, JsonDict, type_name
from limelight.characters.lorebook import Lorebook, read_character_book

SPEC_V1 = "v1"  # what `ParsedCard.spec` says for a flat card without `spec`


@dataclass(frozen=True, slots=True)
class ParsedCard:
    card: CharacterCard
    warnings: list[str]
    spec: str  # the spec the input claimed: chara_card_v2, chara_card_v3 or "v1"


def parse_card(obj: object) -> ParsedCard:
    """Read any card version; raises CardError when `obj` holds no card."""
    if not isinstance(obj, dict):
        raise CardError(f"a character card is a JSON object, got {type_name(obj)}")
    warnings: list[str] = []
    data, top_level_extra, spec = _split_envelope(obj, warnings)
    required = {SPEC_V2: V2_FIELDS, SPEC_V3: V3_REQUIRED}.get(spec, V3_REQUIRED)
    card = _read_data(data, set(required), warnings, top_level_extra)
    return ParsedCard(card, warnings, spec)


def _split_envelope(obj: JsonDict, warnings: list[str]) -> tuple[JsonDict, JsonDict, str]:
    """→ (the fields to read, unknown top-level fields, the spec the card claims)."""
    spec, data = obj.get("spec"), obj.get("data")
    if spec is None or (not isinstance(data, dict) and spec not in (SPEC_V2, SPEC_V3)):
        return _flat(obj, warnings, spec)
    if spec not in (SPEC_V2, SPEC_V3):
        warnings.append(f"unknown spec {spec!r}: read as {SPEC_V3}")
        spec = SPEC_V3
    if not isinstance(data, dict):
        if "name" in obj:
            warnings.append(f"spec is {spec} but there is no 'data' object: read as a V1 card")
            return _flat(obj, warnings, None)
        raise CardError(f"the card says spec {spec!r} but has no 'data' object")
    data = dict(data)
    for name in V1_FIELDS:  # V2 writers mirror these at the top level; `data` wins
        if name not in data and isinstance(obj.get(name), str):
            warnings.append(f"missing field 'data.{name}': taken from the top-level copy")
            data[name] = obj[name]
    top_level_extra = {k: v for k, v in obj.items() if k not in (*ENVELOPE, *V1_FIELDS)}
    return data, top_level_extra, str(spec)


def _flat(obj: JsonDict, warnings: list[str], spec: object) -> tuple[JsonDict, JsonDict, str]:
    if isinstance(obj.get("entries"), dict | list) and "name" not in obj:
        raise CardError("this is a lorebook (World Info) file, not a character card")
    if not any(name in obj for name in V1_FIELDS):
        raise CardError("no character card here: no 'spec', 'data' or V1 fields like 'name'")
    if spec is None:
        warnings.append("no 'spec' field: read as a V1 card")
    else:
        warnings.append(f"unknown spec {spec!r} and no 'data' object: read as a V1 card")
    data = {k: v for k, v in obj.items() if k in V3_FIELDS}
    top_level_extra = {k: v for k, v in obj.items() if k not in (*V3_FIELDS, *ENVELOPE)}
    return data, top_level_extra, SPEC_V1


def _read_data(
    data: JsonDict, required: set[str], warnings: list[str], top_level_extra: JsonDict
) -> CharacterCard:
    if "name" not in data:
        raise CardError("the card has no 'name'")
    reader = FieldReader(data, "data", warnings)
    texts = {name: reader.text(name, required=name in required) for name in TEXT_FIELDS}
    if not texts["name"].strip():
        warnings.append("the card's name is empty")
    card = CharacterCard(
        **texts,
        alternate_greetings=reader.text_list(
            "alternate_greetings", required="alternate_greetings" in required
        ),
        group_only_greetings=reader.text_list(
            "group_only_greetings", required="group_only_greetings" in required
        ),
        tags=reader.text_list("tags", required="tags" in required, split_commas=True),
        extensions=reader.mapping("extensions", required="extensions" in required),
        character_book=_book(reader),
        nickname=reader.optional_text("nickname"),
        creator_notes_multilingual=_multilingual(reader),
        source=reader.optional_text_list("source"),
        assets=_assets(reader),
        creation_date=reader.optional_int("creation_date"),
        modification_date=reader.optional_int("modification_date"),
        extra={k: v for k, v in data.items() if k not in V3_FIELDS} | reader.leftovers,
        top_level_extra=top_level_extra,
    )
    return card


def _book(reader: FieldReader) -> Lorebook | None:
    value = reader.obj.get("character_book")
    if value is None:
        return None
    if not isinstance(value, dict):
        reader.optional_mapping("character_book")  # sets it aside, with a warning
        return None
    return read_character_book(value, "data.character_book", reader.warnings)


def _multilingual(reader: FieldReader) -> dict[str, str] | None:
    value = reader.optional_mapping("creator_notes_multilingual")
    if value is None or all(isinstance(v, str) for v in value.values()):
        return value
    reader.warnings.append(
        "field 'data.creator_notes_multilingual' should map languages to text: "
        "kept unread as an unknown field"
    )
    reader.leftovers["creator_notes_multilingual"] = value
    return None


def _assets(reader: FieldReader) -> list[Asset] | None:
    value: Any = reader.obj.get("assets")
    if value is None:
        return None
    if isinstance(value, list) and all(_is_asset(item) for item in value):
        return [
            Asset(**{k: item[k] for k in ASSET_FIELDS}, extra=_unknown(item, ASSET_FIELDS))
            for item in value
        ]
    reader.warnings.append(
        "field 'data.assets' should be a list of {type, uri, name, ext}: "
        "kept unread as an unknown field"
    )
    reader.leftovers["assets"] = value
    return None


def _is_asset(item: object) -> bool:
    return isinstance(item, dict) and all(isinstance(item.get(k), str) for k in ASSET_FIELDS)


def _unknown(obj: JsonDict, known: tuple[str, ...]) -> JsonDict:
    return {k: v for k, v in obj.items() if k not in known}

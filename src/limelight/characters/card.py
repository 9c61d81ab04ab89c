"""`CharacterCard`: one normalized, V3-shaped character, and its V2/V3 JSON forms.

Every spec version reads into this one dataclass (see `parse.py`) and writes back out of it
with nothing lost: optional V3 fields that were absent stay `None` and are left out again,
unknown keys inside `data` live in `extra`, unknown top-level keys in `top_level_extra`,
and `extensions` and lorebook entries are carried whole.  Both forms also carry the six V1
fields at the top level, refreshed from the card, for readers that only know V1.  Owns the
card's shape; knows nothing of files (`files.py`) or prompts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from limelight.characters.errors import CardError
from limelight.characters.fields import JsonDict
from limelight.characters.lorebook import Lorebook

SPEC_V2 = "chara_card_v2"
SPEC_V3 = "chara_card_v3"
V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
V2_FIELDS = (
    *V1_FIELDS, "creator_notes", "system_prompt", "post_history_instructions",
    "alternate_greetings", "tags", "creator", "character_version", "extensions",
)  # fmt: skip
V3_REQUIRED = (*V2_FIELDS, "group_only_greetings")
TEXT_FIELDS = (
    *V1_FIELDS, "creator_notes", "system_prompt", "post_history_instructions", "creator",
    "character_version",
)  # fmt: skip
LIST_FIELDS = ("alternate_greetings", "group_only_greetings", "tags")
V3_OPTIONAL = (
    "character_book", "assets", "nickname", "creator_notes_multilingual", "source",
    "creation_date", "modification_date",
)  # fmt: skip
V3_FIELDS = (*V3_REQUIRED, *V3_OPTIONAL)
ENVELOPE = ("spec", "spec_version", "data")
ASSET_FIELDS = ("type", "uri", "name", "ext")


@dataclass(frozen=True, slots=True)
class Asset:
    """A V3 asset: `uri` is `embeded://path` (inside a CHARX), `ccdefault:`, or a URL."""

    type: str
    uri: str
    name: str
    ext: str
    extra: JsonDict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ASSET_FIELDS:
            if not isinstance(getattr(self, name), str):
                raise CardError(f"asset field '{name}' must be a string")
        clash = set(self.extra) & set(ASSET_FIELDS)
        if clash:
            raise CardError(f"asset extra fields shadow spec fields: {sorted(clash)}")

    @property
    def embedded_path(self) -> str | None:
        """The path inside a CHARX for `embeded://` URIs (the spec's spelling), else None."""
        for prefix in ("embeded://", "embedded://"):
            if self.uri.startswith(prefix):
                return self.uri[len(prefix) :]
        return None

    def to_dict(self) -> JsonDict:
        return {"type": self.type, "uri": self.uri, "name": self.name, "ext": self.ext} | (
            copy.deepcopy(self.extra)
        )


@dataclass(frozen=True, slots=True)
class CharacterCard:
    """A character, shaped like Character Card V3's `data` (see the spec for each field)."""

    name: str
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    mes_example: str = ""
    creator_notes: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    alternate_greetings: list[str] = field(default_factory=list)
    group_only_greetings: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    creator: str = ""
    character_version: str = ""
    extensions: JsonDict = field(default_factory=dict)
    character_book: Lorebook | None = None
    nickname: str | None = None
    creator_notes_multilingual: dict[str, str] | None = None
    source: list[str] | None = None
    assets: list[Asset] | None = None  # None: absent, which V3 reads as the default icon
    creation_date: int | None = None  # Unix seconds
    modification_date: int | None = None
    extra: JsonDict = field(default_factory=dict)  # unknown keys inside `data`
    top_level_extra: JsonDict = field(default_factory=dict)  # unknown keys beside `data`

    def __post_init__(self) -> None:
        for name in TEXT_FIELDS:
            if not isinstance(getattr(self, name), str):
                raise CardError(f"card field '{name}' must be a string")
        for name in LIST_FIELDS:
            _check_strings(name, getattr(self, name))
        if self.source is not None:
            _check_strings("source", self.source)
        if not isinstance(self.extensions, dict):
            raise CardError("card field 'extensions' must be a dict")
        if self.assets is not None and not all(isinstance(a, Asset) for a in self.assets):
            raise CardError("card field 'assets' must hold Asset objects")
        # An optional field left unset may keep an unreadable raw value in `extra`.
        clash = {
            k
            for k in self.extra
            if k in V3_REQUIRED or (k in V3_OPTIONAL and getattr(self, k) is not None)
        }
        if clash:
            raise CardError(f"card extra fields shadow spec fields: {sorted(clash)}")
        clash = set(self.top_level_extra) & {*ENVELOPE, *V1_FIELDS}
        if clash:
            raise CardError(f"card top-level extra fields shadow spec fields: {sorted(clash)}")

    def to_v3(self) -> JsonDict:
        """The card as a Character Card V3 object (`spec: chara_card_v3`)."""
        data = {name: _copy(getattr(self, name)) for name in V3_REQUIRED}
        data.update(self._optional_fields())
        data.update(copy.deepcopy(self.extra))
        return self._envelope(SPEC_V3, "3.0", data)

    def to_v2(self) -> JsonDict:
        """The card as a Character Card V2 object.

        V3-only fields ride along inside `data` (as SillyTavern writes them), so a V2 reader
        ignores them and a V3-aware reader of the V2 form loses nothing.
        """
        data = {name: _copy(getattr(self, name)) for name in V2_FIELDS}
        data["group_only_greetings"] = list(self.group_only_greetings)
        data.update(self._optional_fields())
        data.update(copy.deepcopy(self.extra))
        return self._envelope(SPEC_V2, "2.0", data)

    def _optional_fields(self) -> JsonDict:
        values: JsonDict = {
            "character_book": None
            if self.character_book is None
            else self.character_book.to_dict(),
            "assets": None if self.assets is None else [a.to_dict() for a in self.assets],
            "nickname": self.nickname,
            "creator_notes_multilingual": _copy(self.creator_notes_multilingual),
            "source": _copy(self.source),
            "creation_date": self.creation_date,
            "modification_date": self.modification_date,
        }
        return {k: v for k, v in values.items() if v is not None}

    def _envelope(self, spec: str, version: str, data: JsonDict) -> JsonDict:
        mirrors = {name: getattr(self, name) for name in V1_FIELDS}
        return (
            {"spec": spec, "spec_version": version, "data": data}
            | mirrors
            | (copy.deepcopy(self.top_level_extra))
        )


def _copy(value: Any) -> Any:
    return copy.deepcopy(value) if isinstance(value, list | dict) else value


def _check_strings(name: str, values: object) -> None:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise CardError(f"card field '{name}' must be a list of strings")

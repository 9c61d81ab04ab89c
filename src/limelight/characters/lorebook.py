"""Lorebooks: a card's `character_book` (Character Card V2/V3 shape) as typed entries.

A `Lorebook` holds `LoreEntry`s exactly as the V3 spec names them, and nothing is lost on
the way through: spec fields that were absent stay `None` and are left out again when
written, every unknown key lands in `extra`, and SillyTavern's own settings stay in each
entry's `extensions` under SillyTavern's names (`selectiveLogic`, `exclude_recursion`, ...).
The scanner reads those through the typed properties below, so `extensions` is the one
place they live.  Standalone SillyTavern World Info files are converted in `world_info.py`;
matching and activation live in `scanner.py`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeGuard, TypeVar

from limelight.characters.errors import CardError
from limelight.characters.fields import FieldReader, JsonDict
from limelight.characters.keys import regex_key_error

E = TypeVar("E", bound=IntEnum)

DEFAULT_DEPTH = 4  # SillyTavern's depth for entries inserted "at depth"


class LorePosition(IntEnum):
    """Where an activated entry goes in the prompt (SillyTavern's `position` numbers)."""

    BEFORE_CHAR = 0  # before the character definition
    AFTER_CHAR = 1  # after the character definition
    AUTHOR_NOTE_TOP = 2
    AUTHOR_NOTE_BOTTOM = 3
    AT_DEPTH = 4  # inside the chat, `depth` messages from the end
    EXAMPLES_TOP = 5  # before the example dialogue
    EXAMPLES_BOTTOM = 6
    OUTLET = 7  # only where a prompt template asks for it by name


class SelectiveLogic(IntEnum):
    """How secondary keys gate a selective entry whose primary key matched."""

    AND_ANY = 0  # at least one secondary key matches
    NOT_ALL = 1  # at least one secondary key does not match
    NOT_ANY = 2  # no secondary key matches
    AND_ALL = 3  # every secondary key matches


ENTRY_FIELDS = (
    "keys", "content", "extensions", "enabled", "insertion_order", "use_regex",
    "case_sensitive", "constant", "name", "priority", "id", "comment", "selective",
    "secondary_keys", "position",
)  # fmt: skip
BOOK_FIELDS = (
    "name", "description", "scan_depth", "token_budget", "recursive_scanning",
    "extensions", "entries",
)  # fmt: skip
POSITION_NAMES = ("before_char", "after_char", "")


@dataclass(frozen=True, slots=True)
class LoreEntry:
    """One lorebook entry; see the V3 spec for the fields, `extensions` for SillyTavern's."""

    keys: list[str]
    content: str
    extensions: JsonDict = field(default_factory=dict)
    enabled: bool = True
    insertion_order: int | float = 100
    use_regex: bool = False  # kept, not used: SillyTavern sets it on plain keys too
    case_sensitive: bool | None = None
    constant: bool | None = None
    name: str | None = None
    priority: int | float | None = None
    id: int | str | None = None
    comment: str | None = None
    selective: bool | None = None
    secondary_keys: list[str] | None = None
    position: str | None = None  # "before_char" | "after_char" | ""
    extra: JsonDict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not all(isinstance(k, str) for k in self.keys):
            raise CardError("a lore entry's keys must be strings")
        if self.secondary_keys is not None and not all(
            isinstance(k, str) for k in self.secondary_keys
        ):
            raise CardError("a lore entry's secondary keys must be strings")
        if not isinstance(self.content, str):
            raise CardError("a lore entry's content must be a string")
        if self.position is not None and self.position not in POSITION_NAMES:
            raise CardError(f"lore entry position {self.position!r} is not one of {POSITION_NAMES}")
        clash = {k for k in self.extra if k in ENTRY_FIELDS and getattr(self, k) is not None}
        if clash:
            raise CardError(f"lore entry extra fields shadow spec fields: {sorted(clash)}")

    # SillyTavern's settings, read from `extensions` (absent or unusable: the default).

    @property
    def insert_position(self) -> LorePosition:
        fallback = (
            LorePosition.BEFORE_CHAR if self.position == "before_char" else LorePosition.AFTER_CHAR
        )
        return _enum_or(LorePosition, self.extensions.get("position"), fallback)

    @property
    def depth(self) -> int:
        value = self.extensions.get("depth")
        return value if _is_int(value) and value >= 0 else DEFAULT_DEPTH

    @property
    def role(self) -> int | None:
        """Message role for at-depth entries: 0 system, 1 user, 2 assistant."""
        value = self.extensions.get("role")
        return value if _is_int(value) and value in (0, 1, 2) else None

    @property
    def selective_logic(self) -> SelectiveLogic:
        value = self.extensions.get("selectiveLogic")
        return _enum_or(SelectiveLogic, value, SelectiveLogic.AND_ANY)

    @property
    def exclude_recursion(self) -> bool:
        """Other entries' content cannot activate this one."""
        return self.extensions.get("exclude_recursion") is True

    @property
    def prevent_recursion(self) -> bool:
        """This entry's content is not scanned for further keys."""
        return self.extensions.get("prevent_recursion") is True

    @property
    def delay_until_recursion(self) -> bool:
        """Only other entries' content can activate this one, never the chat alone."""
        return self.extensions.get("delay_until_recursion") is True

    @property
    def scan_depth(self) -> int | None:
        """How many recent messages this entry scans, overriding the book's setting."""
        value = self.extensions.get("scan_depth")
        return value if _is_int(value) and value >= 0 else None

    @property
    def match_whole_words(self) -> bool | None:
        value = self.extensions.get("match_whole_words")
        return value if isinstance(value, bool) else None

    @property
    def case_sensitivity(self) -> bool | None:
        """SillyTavern's per-entry setting, else the spec's `case_sensitive`, else None."""
        value = self.extensions.get("case_sensitive")
        return value if isinstance(value, bool) else self.case_sensitive

    def problems(self) -> list[str]:
        """What in this entry cannot work as written (bad regex keys)."""
        found = []
        for key in [*self.keys, *(self.secondary_keys or [])]:
            error = regex_key_error(key)
            if error is not None:
                found.append(f"key {key!r}: {error}")
        return found

    def to_dict(self) -> JsonDict:
        out: JsonDict = {
            "keys": list(self.keys),
            "content": self.content,
            "extensions": copy.deepcopy(self.extensions),
            "enabled": self.enabled,
            "insertion_order": self.insertion_order,
            "use_regex": self.use_regex,
        }
        optional = {
            "case_sensitive": self.case_sensitive,
            "constant": self.constant,
            "name": self.name,
            "priority": self.priority,
            "id": self.id,
            "comment": self.comment,
            "selective": self.selective,
            "secondary_keys": None if self.secondary_keys is None else list(self.secondary_keys),
            "position": self.position,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        out.update(copy.deepcopy(self.extra))
        return out


@dataclass(frozen=True, slots=True)
class Lorebook:
    """A character book: entries plus the book-wide scan settings (None: not set)."""

    entries: list[LoreEntry] = field(default_factory=list)
    name: str | None = None
    description: str | None = None
    scan_depth: int | None = None
    token_budget: int | None = None
    recursive_scanning: bool | None = None
    extensions: JsonDict = field(default_factory=dict)
    extra: JsonDict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not all(isinstance(e, LoreEntry) for e in self.entries):
            raise CardError("a lorebook's entries must be LoreEntry objects")
        if self.scan_depth is not None and self.scan_depth < 0:
            raise CardError(f"lorebook scan_depth must be >= 0, got {self.scan_depth}")
        if self.token_budget is not None and self.token_budget < 0:
            raise CardError(f"lorebook token_budget must be >= 0, got {self.token_budget}")
        clash = {k for k in self.extra if k in BOOK_FIELDS and getattr(self, k) is not None}
        if clash:
            raise CardError(f"lorebook extra fields shadow spec fields: {sorted(clash)}")

    def to_dict(self) -> JsonDict:
        out: JsonDict = {}
        optional = {
            "name": self.name,
            "description": self.description,
            "scan_depth": self.scan_depth,
            "token_budget": self.token_budget,
            "recursive_scanning": self.recursive_scanning,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        out["extensions"] = copy.deepcopy(self.extensions)
        out["entries"] = [entry.to_dict() for entry in self.entries]
        out.update(copy.deepcopy(self.extra))
        return out


def read_character_book(obj: object, where: str, warnings: list[str]) -> Lorebook:
    """A V2/V3 `character_book` object → Lorebook; repairs are appended to `warnings`."""
    if not isinstance(obj, dict):
        raise CardError(f"'{where}' must be an object, got {type(obj).__name__}")
    reader = FieldReader(obj, where, warnings)
    raw_entries = obj.get("entries")
    if raw_entries is None:
        warnings.append(f"missing field '{where}.entries': filled in with []")
        raw_entries = []
    if not isinstance(raw_entries, list):
        raise CardError(f"'{where}.entries' must be a list of entries")
    entries = [
        read_entry(raw, f"{where}.entries[{i}]", warnings) for i, raw in enumerate(raw_entries)
    ]
    book = Lorebook(
        entries=entries,
        name=reader.optional_text("name"),
        description=reader.optional_text("description"),
        scan_depth=_non_negative(reader, "scan_depth"),
        token_budget=_non_negative(reader, "token_budget"),
        recursive_scanning=reader.optional_flag("recursive_scanning"),
        extensions=reader.mapping("extensions"),
        extra={k: v for k, v in obj.items() if k not in BOOK_FIELDS} | reader.leftovers,
    )
    return book


def read_entry(obj: object, where: str, warnings: list[str]) -> LoreEntry:
    if not isinstance(obj, dict):
        raise CardError(f"'{where}' must be an object, got {type(obj).__name__}")
    reader = FieldReader(obj, where, warnings)
    position = reader.optional_text("position")
    if position is not None and position not in POSITION_NAMES:
        warnings.append(f"field '{where}.position' is {position!r}: kept as an unknown field")
        reader.leftovers["position"] = position
        position = None
    entry = LoreEntry(
        keys=reader.text_list("keys"),
        content=reader.text("content"),
        extensions=reader.mapping("extensions"),
        enabled=reader.flag("enabled", default=True, required=True),
        insertion_order=reader.number("insertion_order", default=100),
        use_regex=reader.flag("use_regex"),
        case_sensitive=reader.optional_flag("case_sensitive"),
        constant=reader.optional_flag("constant"),
        name=reader.optional_text("name"),
        priority=_optional_number(reader, "priority"),
        id=_entry_id(reader, obj.get("id")),
        comment=reader.optional_text("comment"),
        selective=reader.optional_flag("selective"),
        secondary_keys=reader.optional_text_list("secondary_keys"),
        position=position,
        extra={k: v for k, v in obj.items() if k not in ENTRY_FIELDS} | reader.leftovers,
    )
    warnings.extend(f"{where}: {problem}" for problem in entry.problems())
    return entry


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _enum_or(cls: type[E], value: object, default: E) -> E:
    if not _is_int(value):
        return default
    try:
        return cls(value)
    except ValueError:
        return default


def _non_negative(reader: FieldReader, key: str) -> int | None:
    value = reader.optional_int(key)
    if value is not None and value < 0:
        reader.warnings.append(f"field '{reader.where}.{key}' was {value}: read as unset")
        reader.leftovers[key] = value
        return None
    return value


def _optional_number(reader: FieldReader, key: str) -> int | float | None:
    value = reader.obj.get(key)
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    return reader.optional_int(key)


def _entry_id(reader: FieldReader, value: object) -> int | str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return reader.optional_int("id")

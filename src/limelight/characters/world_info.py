"""SillyTavern World Info files ↔ `Lorebook`, and `parse_lorebook` for either JSON shape.

A World Info file is `{"entries": {"0": {"uid", "key", "keysecondary", "order", "disable",
"excludeRecursion", ...}}}`.  Entries convert the way SillyTavern embeds a world into a card:
spec fields where the spec has one (`key` → `keys`, `order` → `insertion_order`, `disable` →
`enabled`), SillyTavern's own settings into `extensions` under the names it uses in cards
(`excludeRecursion` → `exclude_recursion`), and any other key into `extensions` unchanged,
so `to_world_info(from_world_info(x)) == x` for a file SillyTavern wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from limelight.characters.errors import CardError
from limelight.characters.fields import FieldReader, JsonDict
from limelight.characters.keys import is_regex_key
from limelight.characters.lorebook import Lorebook, LoreEntry, read_character_book

# World Info key → extensions key, for SillyTavern's settings the spec has no field for.
WI_TO_EXTENSION = {
    "position": "position",
    "excludeRecursion": "exclude_recursion",
    "preventRecursion": "prevent_recursion",
    "delayUntilRecursion": "delay_until_recursion",
    "selectiveLogic": "selectiveLogic",
    "scanDepth": "scan_depth",
    "caseSensitive": "case_sensitive",
    "matchWholeWords": "match_whole_words",
    "depth": "depth",
    "role": "role",
    "probability": "probability",
    "useProbability": "useProbability",
    "group": "group",
    "groupOverride": "group_override",
    "groupWeight": "group_weight",
    "useGroupScoring": "use_group_scoring",
    "automationId": "automation_id",
    "vectorized": "vectorized",
    "sticky": "sticky",
    "cooldown": "cooldown",
    "delay": "delay",
    "displayIndex": "display_index",
}
EXTENSION_TO_WI = {v: k for k, v in WI_TO_EXTENSION.items()}
WI_SPEC_KEYS = (
    "uid", "key", "keysecondary", "comment", "content", "constant", "selective", "order",
    "disable",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ParsedLorebook:
    book: Lorebook
    warnings: list[str]
    kind: Literal["world_info", "character_book"]


def parse_lorebook(obj: object, name: str | None = None) -> ParsedLorebook:
    """A World Info file or a bare `character_book` object → Lorebook (+ repairs made)."""
    if not isinstance(obj, dict):
        raise CardError(f"a lorebook must be a JSON object, got {type(obj).__name__}")
    entries = obj.get("entries")
    warnings: list[str] = []
    if isinstance(entries, dict):
        return ParsedLorebook(from_world_info(obj, name, warnings), warnings, "world_info")
    if isinstance(entries, list):
        book = read_character_book(obj, "character_book", warnings)
        return ParsedLorebook(book, warnings, "character_book")
    if "spec" in obj or "data" in obj:
        raise CardError("this is a character card, not a lorebook: import it as a character")
    raise CardError("no lorebook here: expected an 'entries' object (World Info) or list")


def from_world_info(obj: JsonDict, name: str | None, warnings: list[str]) -> Lorebook:
    raw_entries = obj["entries"]
    entries = [
        _entry_from_world_info(raw, uid, warnings) for uid, raw in _ordered(raw_entries).items()
    ]
    extra = {k: v for k, v in obj.items() if k != "entries"}
    if name is None and isinstance(extra.get("name"), str):
        name = extra.pop("name")
    return Lorebook(entries=entries, name=name, extra=extra)


def to_world_info(book: Lorebook) -> JsonDict:
    """The book as a SillyTavern World Info file (book-wide settings have no place there)."""
    entries = {}
    for index, entry in enumerate(book.entries):
        uid = entry.id if isinstance(entry.id, int) else index
        entries[str(uid)] = _entry_to_world_info(entry, uid)
    extra = {k: v for k, v in book.extra.items() if k != "entries"}
    return {"entries": entries, **extra}


def _ordered(entries: JsonDict) -> JsonDict:
    """Entries by numeric uid where the keys are numbers, else as written."""
    if all(k.lstrip("-").isdigit() for k in entries):
        return dict(sorted(entries.items(), key=lambda item: int(item[0])))
    return entries


def _entry_from_world_info(raw: object, uid: str, warnings: list[str]) -> LoreEntry:
    where = f"entries[{uid!r}]"
    if not isinstance(raw, dict):
        raise CardError(f"World Info {where} must be an object, got {type(raw).__name__}")
    reader = FieldReader(raw, where, warnings)
    keys = reader.text_list("key")
    secondary = reader.text_list("keysecondary", required=False)
    extensions: JsonDict = {
        WI_TO_EXTENSION.get(str(k), str(k)): v for k, v in raw.items() if k not in WI_SPEC_KEYS
    }
    position = raw.get("position")
    entry_id = raw.get("uid", int(uid) if uid.lstrip("-").isdigit() else uid)
    entry = LoreEntry(
        keys=keys,
        content=reader.text("content"),
        extensions=extensions,
        enabled=not reader.flag("disable"),
        insertion_order=reader.number("order", default=100),
        use_regex=any(is_regex_key(k) for k in [*keys, *secondary]),
        constant=reader.optional_flag("constant"),
        id=entry_id if isinstance(entry_id, int | str) and not isinstance(entry_id, bool) else None,
        comment=reader.optional_text("comment"),
        selective=reader.optional_flag("selective"),
        secondary_keys=secondary if "keysecondary" in raw else None,
        position="before_char" if position == 0 else "after_char",
        extra=reader.leftovers,
    )
    warnings.extend(f"{where}: {problem}" for problem in entry.problems())
    return entry


def _entry_to_world_info(entry: LoreEntry, uid: int) -> JsonDict:
    out: JsonDict = {"uid": uid, "key": list(entry.keys)}
    if entry.secondary_keys is not None:
        out["keysecondary"] = list(entry.secondary_keys)
    if entry.comment is not None:
        out["comment"] = entry.comment
    out["content"] = entry.content
    if entry.constant is not None:
        out["constant"] = entry.constant
    if entry.selective is not None:
        out["selective"] = entry.selective
    out["order"] = entry.insertion_order
    out["position"] = int(entry.insert_position)
    out["disable"] = not entry.enabled
    for key, value in entry.extensions.items():
        if key != "position":
            out[EXTENSION_TO_WI.get(key, key)] = value
    if "caseSensitive" not in out and entry.case_sensitive is not None:
        out["caseSensitive"] = entry.case_sensitive
    for key, value in (("name", entry.name), ("priority", entry.priority)):
        if value is not None:
            out[key] = value
    return out | entry.extra

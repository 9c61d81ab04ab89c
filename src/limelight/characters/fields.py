"""Read loosely typed JSON fields into typed values, noting every repair as a warning.

Real cards break their specs in small ways: a missing field, `null` where a string belongs,
a number as a version, tags as one comma-separated string.  `FieldReader` repairs what has
one obvious repair and says so in its `warnings`; a required value with no sensible reading
raises `CardError` naming the field, and an optional one is set aside in `leftovers` so the
caller can keep it verbatim as an unknown field.  Owns single values only, no card or
lorebook structure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from limelight.characters.errors import CardError

JsonDict = dict[str, Any]


def type_name(value: object) -> str:
    """The JSON name of a Python value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@dataclass
class FieldReader:
    """Typed reads from one JSON object; `where` names it in messages ("data", "entries[3]")."""

    obj: Mapping[str, Any]
    where: str
    warnings: list[str]
    leftovers: JsonDict = field(default_factory=dict)

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _filled(self, key: str, default: object) -> None:
        self.warnings.append(
            f"missing field '{self._path(key)}': filled in with {json.dumps(default)}"
        )

    def _repaired(self, key: str, value: object, how: str) -> None:
        self.warnings.append(f"field '{self._path(key)}' was {type_name(value)}: {how}")

    def _set_aside(self, key: str, value: object, expected: str) -> None:
        self.warnings.append(
            f"field '{self._path(key)}' should be {expected}, got {type_name(value)}: "
            "kept unread as an unknown field"
        )
        self.leftovers[key] = value

    def text(self, key: str, *, required: bool = True) -> str:
        """A string field; absent or null reads as "" (noted when the spec requires it)."""
        if key not in self.obj:
            if required:
                self._filled(key, "")
            return ""
        value = self.obj[key]
        if isinstance(value, str):
            return value
        if value is None:
            self._repaired(key, value, 'read as ""')
            return ""
        if isinstance(value, int | float) and not isinstance(value, bool):
            self._repaired(key, value, "read as text")
            return str(value)
        raise CardError(f"field '{self._path(key)}' must be a string, got {type_name(value)}")

    def optional_text(self, key: str) -> str | None:
        value = self.obj.get(key)
        if value is None or isinstance(value, str):
            return value
        self._set_aside(key, value, "a string")
        return None

    def text_list(
        self, key: str, *, required: bool = True, split_commas: bool = False
    ) -> list[str]:
        """A list of strings; null reads as [], a lone string as one item (or comma-split)."""
        if key not in self.obj:
            if required:
                self._filled(key, [])
            return []
        value = self.obj[key]
        if value is None:
            self._repaired(key, value, "read as []")
            return []
        if isinstance(value, str):
            items = [s.strip() for s in value.split(",")] if split_commas else [value]
            items = [s for s in items if s]
            self._repaired(key, value, f"read as {json.dumps(items)}")
            return items
        if not isinstance(value, list):
            raise CardError(
                f"field '{self._path(key)}' must be a list of strings, got {type_name(value)}"
            )
        return self._string_items(key, value)

    def optional_text_list(self, key: str) -> list[str] | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self._set_aside(key, value, "a list of strings")
            return None
        return self._string_items(key, value)

    def _string_items(self, key: str, items: list[Any]) -> list[str]:
        if all(isinstance(item, str) for item in items):
            return list(items)
        kept: list[str] = []
        for item in items:
            if isinstance(item, str):
                kept.append(item)
            elif isinstance(item, int | float) and not isinstance(item, bool):
                kept.append(str(item))
            elif item is not None:
                raise CardError(
                    f"field '{self._path(key)}' must hold strings, found {type_name(item)}"
                )
        self.warnings.append(f"field '{self._path(key)}' held non-string items: read as text")
        return kept

    def flag(self, key: str, *, default: bool = False, required: bool = False) -> bool:
        value = self.obj.get(key)
        if isinstance(value, bool):
            return value
        if value is None:
            if required:
                self._filled(key, default)
            return default
        if isinstance(value, int | float | str):
            read = value not in (0, "", "false", "False", "0")
            self._repaired(key, value, f"read as {json.dumps(read)}")
            return read
        raise CardError(f"field '{self._path(key)}' must be true or false, got {type_name(value)}")

    def optional_flag(self, key: str) -> bool | None:
        value = self.obj.get(key)
        if value is None or isinstance(value, bool):
            return value
        self._set_aside(key, value, "true or false")
        return None

    def optional_int(self, key: str) -> int | None:
        value = self.obj.get(key)
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            self._repaired(key, value, "read as a number")
            return int(value)
        self._set_aside(key, value, "a whole number")
        return None

    def number(self, key: str, *, default: int) -> int | float:
        """A required number (an entry's insertion order); absent is filled with `default`."""
        value = self.obj.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if value is None:
            self._filled(key, default)
            return default
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                self._repaired(key, value, "read as a number")
                return int(number) if number.is_integer() else number
        raise CardError(f"field '{self._path(key)}' must be a number, got {type_name(value)}")

    def mapping(self, key: str, *, required: bool = True) -> JsonDict:
        """An object field (extensions); absent or null reads as {}."""
        if key not in self.obj:
            if required:
                self._filled(key, {})
            return {}
        value = self.obj[key]
        if isinstance(value, dict):
            return dict(value)
        if value is None:
            self._repaired(key, value, "read as {}")
            return {}
        raise CardError(f"field '{self._path(key)}' must be an object, got {type_name(value)}")

    def optional_mapping(self, key: str) -> JsonDict | None:
        value = self.obj.get(key)
        if value is None or isinstance(value, dict):
            return value
        self._set_aside(key, value, "an object")
        return None

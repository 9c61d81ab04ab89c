"""Card parsing and V2/V3 output: real cards, spec violations, unknown fields kept."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from limelight.characters import CardError, CharacterCard, parse_card
from limelight.characters.card import Asset
from limelight.characters.parse import SPEC_V1

V1_FILLED = {
    "data.creator_notes", "data.system_prompt", "data.post_history_instructions",
    "data.creator", "data.character_version", "data.alternate_greetings",
    "data.group_only_greetings", "data.tags", "data.extensions",
}  # fmt: skip
# Warnings each real card must produce, as (filled-in fields, other warnings).
EXPECTED_WARNINGS: dict[str, tuple[set[str], list[str]]] = {
    "choral_Default-chan.ccv3.json": ({"data.group_only_greetings"}, []),
    "st_legacy_Aqua.chara.json": (V1_FILLED, ["no 'spec' field: read as a V1 card"]),
    "st_legacy_Darkness.chara.json": (V1_FILLED, ["no 'spec' field: read as a V1 card"]),
    "st_legacy_Megumin.chara.json": (V1_FILLED, ["no 'spec' field: read as a V1 card"]),
    # SillyTavern leaves out the book-level `extensions` the spec requires.
    "st_default_Seraphina.chara.json": ({"data.character_book.extensions"}, []),
    "st_default_Seraphina_staging.chara.json": ({"data.character_book.extensions"}, []),
    "st_default_Seraphina_staging.ccv3.json": ({"data.character_book.extensions"}, []),
    "stcontent_contest_Assistant_Sakana.chara.json": ({"data.character_book.extensions"}, []),
}


def filled_fields(warnings: list[str]) -> set[str]:
    return {m.group(1) for w in warnings if (m := re.match(r"missing field '([^']+)'", w))}


def other_warnings(warnings: list[str]) -> list[str]:
    return [w for w in warnings if not w.startswith("missing field")]


def assert_preserved(raw: Any, out: Any, path: str = "") -> None:
    """Every value in `raw` is in `out` (an absent key and a null one count as the same)."""
    if isinstance(raw, dict):
        assert isinstance(out, dict), path
        for key, value in raw.items():
            if value is not None:
                assert key in out, f"{path}.{key} was lost"
                assert_preserved(value, out[key], f"{path}.{key}")
    elif isinstance(raw, list):
        assert isinstance(out, list) and len(out) == len(raw), path
        for i, (a, b) in enumerate(zip(raw, out, strict=True)):
            assert_preserved(a, b, f"{path}[{i}]")
    else:
        assert raw == out, f"{path}: {raw!r} became {out!r}"


def card_json_files(shared_data: Path) -> list[Path]:
    return sorted(p for p in (shared_data / "cards").glob("*.json") if p.name != "MANIFEST.json")


def test_every_real_card_json_parses_with_the_expected_warnings(shared_data: Path) -> None:
    files = card_json_files(shared_data)
    assert len(files) == 16
    for path in files:
        raw = json.loads(path.read_text())
        parsed = parse_card(raw)
        filled, others = EXPECTED_WARNINGS.get(path.name, (set(), []))
        assert filled_fields(parsed.warnings) == filled, path.name
        assert other_warnings(parsed.warnings) == others, path.name
        expected_spec = raw.get("spec", SPEC_V1)
        assert parsed.spec == expected_spec
        name = raw["data"]["name"] if "data" in raw else raw["name"]
        assert parsed.card.name == name


def test_real_cards_lose_nothing_in_v3_and_v2(shared_data: Path) -> None:
    for path in card_json_files(shared_data):
        raw = json.loads(path.read_text())
        card = parse_card(raw).card
        for out in (card.to_v3(), card.to_v2()):
            if "data" in raw:
                assert_preserved(raw["data"], out["data"], path.name)
                top = {k: v for k, v in raw.items() if k not in ("spec", "spec_version", "data")}
                assert_preserved(top, out, path.name)
            else:  # V1: every flat field is still at the top level
                assert_preserved(raw, out, path.name)
            again = parse_card(out)
            assert again.warnings == []
            assert again.card == card


def test_v1_card_is_read_flat_and_written_as_v3(shared_data: Path) -> None:
    raw = json.loads((shared_data / "cards" / "st_legacy_Aqua.chara.json").read_text())
    card = parse_card(raw).card
    assert card.personality == raw["personality"]
    assert card.top_level_extra == {k: raw[k] for k in ("avatar", "chat", "create_date")}
    v3 = card.to_v3()
    assert v3["spec"] == "chara_card_v3" and v3["spec_version"] == "3.0"
    assert v3["data"]["first_mes"] == raw["first_mes"]
    assert v3["data"]["group_only_greetings"] == []


def test_sakana_book_and_extensions_survive(shared_data: Path) -> None:
    raw = json.loads(
        (shared_data / "cards" / "stcontent_contest_Assistant_Sakana.chara.json").read_text()
    )
    card = parse_card(raw).card
    assert card.character_book is not None
    assert len(card.character_book.entries) == 14
    assert card.extensions["world"] == "Sakana-WI"
    assert_preserved(raw["data"]["character_book"], card.character_book.to_dict())


def full_v3_card() -> dict[str, Any]:
    """A V3 card using every optional field plus unknown fields at every level."""
    return {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "x_top": {"kept": True},
        "data": {
            "name": "Test", "description": "d", "personality": "p", "scenario": "s",
            "first_mes": "hi", "mes_example": "<START>", "creator_notes": "n",
            "system_prompt": "sys", "post_history_instructions": "phi",
            "alternate_greetings": ["a1"], "group_only_greetings": ["g1"], "tags": ["t"],
            "creator": "me", "character_version": "2", "extensions": {"app": {"k": [1, 2]}},
            "character_book": {
                "name": "Book", "scan_depth": 3, "token_budget": 100,
                "recursive_scanning": False, "extensions": {"b": 1}, "x_book": "kept",
                "entries": [{
                    "keys": ["k"], "content": "c", "extensions": {"selectiveLogic": 2, "x": 1},
                    "enabled": True, "insertion_order": 5, "use_regex": False,
                    "case_sensitive": True, "constant": False, "name": "e", "priority": 3,
                    "id": 7, "comment": "cm", "selective": True, "secondary_keys": ["s"],
                    "position": "before_char", "x_entry": [1],
                }],
            },
            "assets": [
                {"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png", "x": 1}
            ],
            "nickname": "T", "creator_notes_multilingual": {"fr": "bonjour"},
            "source": ["https://example.invalid/card"], "creation_date": 1700000000,
            "modification_date": 1700000100, "x_data": {"nested": ["kept"]},
        },
    }  # fmt: skip


def test_every_field_and_unknown_field_round_trips() -> None:
    raw = full_v3_card()
    parsed = parse_card(copy.deepcopy(raw))
    assert parsed.warnings == []
    card = parsed.card
    assert card.extra == {"x_data": {"nested": ["kept"]}}
    assert card.top_level_extra == {"x_top": {"kept": True}}
    assert card.assets == [Asset("icon", "ccdefault:", "main", "png", {"x": 1})]
    v3 = card.to_v3()
    assert v3["data"] == raw["data"]
    assert v3["x_top"] == {"kept": True}
    v2 = card.to_v2()
    assert v2["spec"] == "chara_card_v2" and v2["spec_version"] == "2.0"
    assert parse_card(v2).card == card  # V3-only fields ride along inside V2 data
    assert parse_card(v3).card == card


def test_v3_without_group_only_greetings_is_filled_with_a_warning() -> None:
    raw = full_v3_card()
    del raw["data"]["group_only_greetings"]
    parsed = parse_card(raw)
    assert parsed.card.group_only_greetings == []
    assert parsed.warnings == ["missing field 'data.group_only_greetings': filled in with []"]


def test_v2_card_needs_no_group_only_greetings() -> None:
    raw = full_v3_card()
    raw["spec"], raw["spec_version"] = "chara_card_v2", "2.0"
    del raw["data"]["group_only_greetings"]
    assert parse_card(raw).warnings == []


def test_loose_values_are_repaired_and_named() -> None:
    raw = {
        "spec": "chara_card_v2",
        "data": {
            "name": "Loose", "description": None, "personality": "", "scenario": "",
            "first_mes": "", "mes_example": "", "creator_notes": "", "system_prompt": "",
            "post_history_instructions": "", "alternate_greetings": None,
            "tags": "fantasy, elf ,", "creator": "", "character_version": 1.5,
            "extensions": None, "creation_date": "1700000000", "nickname": 5,
        },
    }  # fmt: skip
    parsed = parse_card(raw)
    card = parsed.card
    assert card.description == "" and card.alternate_greetings == []
    assert card.tags == ["fantasy", "elf"]
    assert card.character_version == "1.5"
    assert card.extensions == {}
    assert card.creation_date == 1700000000
    assert card.nickname is None and card.extra == {"nickname": 5}  # kept verbatim
    named = " ".join(parsed.warnings)
    for field in ("description", "alternate_greetings", "tags", "character_version",
                  "extensions", "creation_date", "nickname"):  # fmt: skip
        assert f"'data.{field}'" in named


def test_v1_fields_missing_from_data_come_from_the_top_level_copy() -> None:
    raw = full_v3_card()
    raw["name"] = raw["data"].pop("name")
    parsed = parse_card(raw)
    assert parsed.card.name == "Test"
    assert parsed.warnings == ["missing field 'data.name': taken from the top-level copy"]


def test_spec_without_data_and_unknown_specs() -> None:
    flat = {"spec": "chara_card_v2", "name": "Flat", "description": "x"}
    parsed = parse_card(flat)
    assert parsed.card.description == "x"
    assert "no 'data' object" in parsed.warnings[0]
    odd = full_v3_card()
    odd["spec"] = "chara_card_v4"
    parsed = parse_card(odd)
    assert parsed.warnings == ["unknown spec 'chara_card_v4': read as chara_card_v3"]


def test_malformed_assets_are_kept_unread() -> None:
    raw = full_v3_card()
    raw["data"]["assets"] = [{"type": "icon"}]
    parsed = parse_card(raw)
    assert parsed.card.assets is None
    assert parsed.card.to_v3()["data"]["assets"] == [{"type": "icon"}]
    assert any("'data.assets'" in w for w in parsed.warnings)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], "a character card is a JSON object, got array"),
        ("card", "a character card is a JSON object, got string"),
        ({"hello": "world"}, "no character card here"),
        ({"entries": {"0": {"key": ["a"]}}}, "this is a lorebook (World Info) file"),
        ({"spec": "chara_card_v2", "data": {"description": "x"}}, "the card has no 'name'"),
        ({"spec": "chara_card_v3"}, "the card says spec 'chara_card_v3' but has no 'data'"),
        ({"spec": "chara_card_v2", "data": {"name": "x", "description": ["a"]}},
         "field 'data.description' must be a string, got array"),
    ],
)  # fmt: skip
def test_input_with_no_card_raises_a_clear_card_error(obj: object, message: str) -> None:
    with pytest.raises(CardError, match=re.escape(message)):
        parse_card(obj)


def test_card_error_is_a_value_error() -> None:
    assert issubclass(CardError, ValueError)


def test_dataclass_validates_itself() -> None:
    with pytest.raises(CardError, match="'name' must be a string"):
        CharacterCard(name=3)  # type: ignore[arg-type]
    with pytest.raises(CardError, match="list of strings"):
        CharacterCard(name="x", tags=["ok", 1])  # type: ignore[list-item]
    with pytest.raises(CardError, match="shadow spec fields"):
        CharacterCard(name="x", extra={"description": "sneaky"})
    with pytest.raises(CardError, match="shadow spec fields"):
        CharacterCard(name="x", top_level_extra={"spec": "v9"})

"""The character library in the store: create, import, update, export, built-ins.

Rows keep the card as its V3 dict (`CharacterCard.to_v3()`), so unknown fields and
extensions survive any edit made here; the avatar is a PNG and CHARX assets are rows of
their own.  Built-in characters are installed once, into an empty library: a user who
deletes one does not see it come back.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from limelight.characters.card import CharacterCard
from limelight.characters.defaults import default_characters
from limelight.characters.errors import CardError
from limelight.characters.files import (
    ImportedCard,
    export_charx,
    export_json,
    export_png,
    read_card_file,
)
from limelight.characters.naming import slugify
from limelight.characters.parse import parse_card
from limelight.store import Character, CharacterAsset, utcnow

EDITABLE = (
    "name",
    "description",
    "personality",
    "scenario",
    "first_mes",
    "mes_example",
    "system_prompt",
    "post_history_instructions",
    "creator_notes",
    "alternate_greetings",
    "tags",
    "creator",
    "character_version",
    "extensions",
)


def install_defaults(db: Session) -> None:
    if db.scalar(select(func.count()).select_from(Character)):
        return
    for imported in default_characters():
        add_card(db, imported, is_builtin=True)


def card_of(row: Character) -> CharacterCard:
    return parse_card(row.card).card


def add_card(db: Session, imported: ImportedCard, is_builtin: bool = False) -> Character:
    card = imported.card
    row = Character(
        slug=unique_slug(db, card.name),
        name=card.name,
        card=card.to_v3(),
        avatar=imported.avatar,
        is_builtin=is_builtin,
    )
    db.add(row)
    db.flush()
    for name, data in imported.assets.items():
        db.add(CharacterAsset(character_id=row.id, name=name, data=data))
    return row


def import_file(db: Session, data: bytes, filename: str | None) -> tuple[Character, list[str]]:
    imported = read_card_file(data, filename)
    return add_card(db, imported), list(imported.warnings)


def create_from_fields(db: Session, fields: dict[str, Any]) -> Character:
    card = CharacterCard(**{k: v for k, v in fields.items() if k in EDITABLE})
    return add_card(db, ImportedCard(card=card))


def update_fields(db: Session, row: Character, fields: dict[str, Any]) -> Character:
    """Change the given card fields; everything else on the card stays as it was."""
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise CardError(f"cannot edit {sorted(unknown)}; editable fields: {list(EDITABLE)}")
    data = dict(row.card)
    data["data"] = {**data.get("data", {}), **fields}
    card = parse_card(data).card  # validates the result before anything is stored
    row.card, row.name, row.updated_at = card.to_v3(), card.name, utcnow()
    return row


def export(db: Session, row: Character, fmt: Literal["png", "json", "charx"]) -> bytes:
    card = card_of(row)
    if fmt == "json":
        return export_json(card)
    if fmt == "png":
        return export_png(card, row.avatar)
    assets = db.scalars(select(CharacterAsset).where(CharacterAsset.character_id == row.id))
    return export_charx(card, row.avatar, {a.name: a.data for a in assets})


def unique_slug(db: Session, name: str) -> str:
    base = slugify(name)
    taken = set(db.scalars(select(Character.slug).where(Character.slug.like(f"{base}%"))))
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    return slug

"""/api/characters: list, read, create, update, delete, import and export characters.

Import takes a PNG, JSON or CHARX file as the multipart field `file` and answers 201 with
the character (its `slug` included) and any warnings about fields the card lacked.
Export gives the card back as `format=png|json|charx`, unknown fields and all.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Response, UploadFile
from sqlalchemy import select
from sqlalchemy.orm import Session

from limelight.characters import library
from limelight.server.deps import CallerDep, DatabaseDep, Services, ServicesDep
from limelight.server.errors import APIError
from limelight.server.schemas import api
from limelight.store import Character
from limelight.voice import VoiceProfile

router = APIRouter(prefix="/api/characters", tags=["characters"])
MEDIA = {"png": "image/png", "json": "application/json", "charx": "application/zip"}


@router.get("")
def list_characters(db: DatabaseDep, _: CallerDep) -> list[api.CharacterSummary]:
    rows = db.scalars(select(Character).order_by(Character.is_builtin.desc(), Character.name))
    return [summary(row) for row in rows]


@router.get("/{slug}")
def read_character(slug: str, db: DatabaseDep, _: CallerDep) -> api.CharacterPublic:
    return public(read_row(db, slug))


@router.post("", status_code=201)
def create_character(
    body: api.CharacterCreate, svc: ServicesDep, db: DatabaseDep, _: CallerDep
) -> api.CharacterPublic:
    fields = with_voice(svc, body.model_dump(), {})
    return public(library.create_from_fields(db, fields))


@router.patch("/{slug}")
def update_character(
    slug: str, body: api.CharacterUpdate, svc: ServicesDep, db: DatabaseDep, _: CallerDep
) -> api.CharacterPublic:
    row = read_row(db, slug)
    fields = with_voice(svc, body.model_dump(exclude_unset=True), row.card.get("data", {}))
    return public(library.update_fields(db, row, fields))


@router.delete("/{slug}", status_code=204)
def delete_character(slug: str, db: DatabaseDep, _: CallerDep) -> Response:
    db.delete(read_row(db, slug))
    return Response(status_code=204)


@router.post("/import", status_code=201)
def import_character(
    file: Annotated[UploadFile, File()], db: DatabaseDep, _: CallerDep
) -> api.CharacterPublic:
    data = file.file.read()  # a plain route: reading a large card runs off the event loop
    if not data:
        raise APIError(400, "the uploaded file is empty", "file")
    row, warnings = library.import_file(db, data, file.filename)
    return public(row, warnings)


@router.get("/{slug}/export")
def export_character(
    slug: str, db: DatabaseDep, _: CallerDep, format: Literal["png", "json", "charx"] = "png"
) -> Response:
    data = library.export(db, read_row(db, slug), format)
    headers = {"content-disposition": f'attachment; filename="{slug}.{format}"'}
    return Response(data, media_type=MEDIA[format], headers=headers)


@router.get("/{slug}/avatar")
def read_avatar(slug: str, svc: ServicesDep) -> Response:
    """Public, like the image of a web page: an `<img>` cannot send a key."""
    with svc.store.session() as db:
        avatar = read_row(db, slug).avatar
    if avatar is None:
        raise APIError(404, f"character {slug!r} has no avatar")
    return Response(avatar, media_type="image/png", headers={"cache-control": "max-age=60"})


def with_voice(svc: Services, fields: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The fields with a given `voice` checked and moved to `extensions.limelight.voice`,
    where cards carry it (so it travels with an exported card)."""
    voice = fields.pop("voice", None)
    if voice is None:
        return fields
    profile = VoiceProfile.from_dict(voice)  # a VoiceError (400) names what is wrong
    if svc.voice is not None:
        svc.voice.check(profile)
    extensions = dict(fields.get("extensions", current.get("extensions", {})))
    extensions["limelight"] = {**extensions.get("limelight", {}), "voice": profile.to_dict()}
    return {**fields, "extensions": extensions}


def read_row(db: Session, slug: str) -> Character:
    row = db.scalar(select(Character).where(Character.slug == slug))
    if row is None:
        raise APIError(404, f"no character {slug!r}; GET /api/characters lists them")
    return row


def summary(row: Character) -> api.CharacterSummary:
    data = row.card.get("data", {})
    voice = data.get("extensions", {}).get("limelight", {}).get("voice")
    return api.CharacterSummary(
        slug=row.slug,
        name=row.name,
        description=data.get("description", "")[:300],
        tags=data.get("tags", []),
        avatar_url=f"/api/characters/{row.slug}/avatar",
        is_builtin=row.is_builtin,
        voice=voice if isinstance(voice, dict) else None,
    )


def public(row: Character, warnings: list[str] | None = None) -> api.CharacterPublic:
    return api.CharacterPublic(**summary(row).model_dump(), card=row.card, warnings=warnings or [])

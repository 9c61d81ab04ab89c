"""/api/characters over real HTTP: every shared real-world card imports, survives export
and re-import in each format with nothing lost, and the library's CRUD keeps what it was
not asked to change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from limelight.characters.png import PNG_SIGNATURE
from tests.server.conftest import SHARED_DATA, Server

pytestmark = pytest.mark.slow
CARDS = SHARED_DATA / "cards"
MANIFEST: list[dict[str, Any]] = json.loads((CARDS / "MANIFEST.json").read_text())
GOOD = [row for row in MANIFEST if row["cards"]]
INVALID = [row["file"] for row in MANIFEST if not row["cards"]]
FORMATS = ["png", "json", "charx"]


@pytest.fixture(scope="module")
def http(server_no_memory: Server) -> Iterator[httpx.Client]:
    with server_no_memory.client() as client:
        yield client


def upload(http: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return http.post("/api/characters/import", files={"file": (name, data)})


def import_ok(http: httpx.Client, name: str, data: bytes) -> dict[str, Any]:
    response = upload(http, name, data)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def source_card(row: dict[str, Any]) -> dict[str, Any]:
    """The card JSON the file holds (its V3 chunk when it has one), from the data set."""
    stem = row["file"].removesuffix(".png").replace("_v2+v3", "")
    chunk = "ccv3" if "ccv3" in row["cards"] else "chara"
    path = CARDS / f"{stem}.{chunk}.json"
    card: dict[str, Any] = json.loads(path.read_text())
    return card


@pytest.mark.parametrize("row", GOOD, ids=[row["file"] for row in GOOD])
def test_every_card_imports_with_what_it_holds(http: httpx.Client, row: dict[str, Any]) -> None:
    body = import_ok(http, row["file"], (CARDS / row["file"]).read_bytes())
    name = next(iter(row["cards"].values()))["name"]
    assert body["name"] == name and body["slug"] and body["card"]["data"]["name"] == name
    assert body["avatar_url"] == f"/api/characters/{body['slug']}/avatar"
    source = source_card(row)
    fields = source["data"] if isinstance(source.get("data"), dict) else source
    data = body["card"]["data"]
    for key in ("description", "personality", "scenario", "first_mes", "mes_example"):
        assert data[key] == (fields.get(key) or ""), key
    for key, value in fields.items():  # V2/V3 data: every field kept as written
        if "spec" in source and value is not None and key != "character_book":
            assert data.get(key) == value, key
    num_entries = next(iter(row["cards"].values()))["character_book_entries"]
    assert len((data.get("character_book") or {}).get("entries", [])) == num_entries
    again = http.get(f"/api/characters/{body['slug']}")
    assert again.status_code == 200 and again.json()["card"] == body["card"]


@pytest.mark.parametrize("name", INVALID)
def test_a_png_without_a_card_is_refused_clearly(http: httpx.Client, name: str) -> None:
    before = http.get("/api/characters").json()
    response = upload(http, name, (CARDS / name).read_bytes())
    assert response.status_code == 400
    error = response.json()["error"]
    assert name in error["message"] and "no character card" in error["message"]
    assert error["type"] == "invalid_request_error"
    assert http.get("/api/characters").json() == before


def test_a_file_of_no_known_format_is_refused(http: httpx.Client) -> None:
    response = upload(http, "notes.txt", b"just some notes")
    assert response.status_code == 400
    assert "unknown format" in response.json()["error"]["message"]
    broken = upload(http, "broken.json", b'{"name": "Ada", ')
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("row", GOOD, ids=[row["file"] for row in GOOD])
def test_export_and_import_again_loses_nothing(
    http: httpx.Client, row: dict[str, Any], fmt: str
) -> None:
    original = import_ok(http, row["file"], (CARDS / row["file"]).read_bytes())
    exported = http.get(f"/api/characters/{original['slug']}/export", params={"format": fmt})
    assert exported.status_code == 200
    assert f'filename="{original["slug"]}.{fmt}"' in exported.headers["content-disposition"]
    again = import_ok(http, f"exported.{fmt}", exported.content)
    assert again["slug"] != original["slug"]
    assert again["card"] == original["card"]
    avatar = http.get(original["avatar_url"])
    assert avatar.status_code == 200 and avatar.content.startswith(PNG_SIGNATURE)
    copied = http.get(again["avatar_url"])
    if fmt == "json":  # JSON carries no image
        assert copied.status_code == 404 and "no avatar" in copied.json()["error"]["message"]
    else:
        assert copied.status_code == 200 and copied.content == avatar.content


def test_an_avatar_is_the_image_alone(http: httpx.Client) -> None:
    row = GOOD[0]
    body = import_ok(http, row["file"], (CARDS / row["file"]).read_bytes())
    avatar = http.get(body["avatar_url"])
    assert avatar.headers["content-type"] == "image/png"
    refused = upload(http, "avatar.png", avatar.content)  # the card chunks were taken out
    assert refused.status_code == 400 and "no character card" in refused.text


NEW = {
    "name": "Ada Quill",
    "description": "A clockmaker.",
    "first_mes": "Welcome to the shop.",
    "alternate_greetings": ["Mind the gears."],
    "tags": ["crafts"],
    "extensions": {"limelight": {"voice": {"id": "calm"}}, "other_app": {"x": [1, 2]}},
}


def test_create_read_update_delete(http: httpx.Client) -> None:
    created = http.post("/api/characters", json=NEW)
    assert created.status_code == 201, created.text
    slug = created.json()["slug"]
    assert slug.startswith("ada-quill")
    read = http.get(f"/api/characters/{slug}").json()
    for key, value in NEW.items():
        assert read["card"]["data"][key] == value, key
    assert read["voice"] == {"id": "calm"} and not read["is_builtin"]
    twin = http.post("/api/characters", json=NEW).json()
    assert twin["slug"] != slug  # same name, its own slug

    patched = http.patch(f"/api/characters/{slug}", json={"description": "A master clockmaker."})
    assert patched.status_code == 200, patched.text
    data = patched.json()["card"]["data"]
    assert data["description"] == "A master clockmaker." and patched.json()["slug"] == slug
    for key in ("first_mes", "alternate_greetings", "tags", "extensions"):
        assert data[key] == NEW[key], key
    renamed = http.patch(f"/api/characters/{slug}", json={"name": "Ada Q."}).json()
    assert renamed["name"] == "Ada Q." and renamed["card"]["name"] == "Ada Q."
    assert renamed["slug"] == slug  # links keep working

    assert http.delete(f"/api/characters/{slug}").status_code == 204
    gone = http.get(f"/api/characters/{slug}")
    assert gone.status_code == 404 and slug in gone.json()["error"]["message"]
    assert slug not in [c["slug"] for c in http.get("/api/characters").json()]
    assert http.delete(f"/api/characters/{slug}").status_code == 404
    assert http.get(f"/api/characters/{twin['slug']}").status_code == 200


def test_update_keeps_unknown_fields_and_extensions(http: httpx.Client) -> None:
    card = {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {
            "name": "Odd Card",
            "description": "Has extras.",
            "extensions": {"depth_prompt": {"prompt": "Be odd.", "depth": 4}},
            "some_future_field": {"nested": [1, "two"]},
            "character_book": {"entries": [{"keys": ["x"], "content": "X.", "extensions": {}}]},
        },
        "app_metadata": {"exported_by": "elsewhere"},
    }
    imported = import_ok(http, "odd.json", json.dumps(card).encode())
    slug = imported["slug"]
    patched = http.patch(f"/api/characters/{slug}", json={"personality": "curious", "tags": ["a"]})
    assert patched.status_code == 200, patched.text
    after = patched.json()["card"]
    assert after["data"]["personality"] == "curious" and after["data"]["tags"] == ["a"]
    assert after["data"]["some_future_field"] == {"nested": [1, "two"]}
    assert after["data"]["extensions"] == card["data"]["extensions"]  # type: ignore[index]
    assert after["app_metadata"] == {"exported_by": "elsewhere"}
    assert after["data"]["character_book"] == imported["card"]["data"]["character_book"]
    exported = http.get(f"/api/characters/{slug}/export", params={"format": "json"}).json()
    assert exported["data"]["some_future_field"] == {"nested": [1, "two"]}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"colour": "red"}, "colour"),
        ({"name": ""}, "name"),
        ({"name": None}, "name cannot be null"),
        ({"description": None, "tags": None}, "description, tags cannot be null"),
        ({"tags": "not a list"}, "tags"),
        ({"description": 3}, "description"),
    ],
)
def test_a_bad_update_is_refused_and_changes_nothing(
    http: httpx.Client, body: dict[str, Any], words: str
) -> None:
    slug = http.post("/api/characters", json=NEW).json()["slug"]
    before = http.get(f"/api/characters/{slug}").json()
    response = http.patch(f"/api/characters/{slug}", json=body)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]["message"]
    assert http.get(f"/api/characters/{slug}").json() == before


def test_models_list_every_character(http: httpx.Client) -> None:
    created = http.post("/api/characters", json={"name": "Listed One"}).json()
    ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
    slugs = [c["slug"] for c in http.get("/api/characters").json()]
    assert f"character/{created['slug']}" in ids
    assert sorted(
        i.removeprefix("character/") for i in ids if i.startswith("character/")
    ) == sorted(slugs)
    builtins = [c for c in http.get("/api/characters").json() if c["is_builtin"]]
    assert len(builtins) == 6
    for character in builtins:
        assert http.get(character["avatar_url"]).content.startswith(PNG_SIGNATURE)


def test_a_character_without_an_image_has_no_avatar(http: httpx.Client) -> None:
    slug = http.post("/api/characters", json={"name": "Faceless"}).json()["slug"]
    response = http.get(f"/api/characters/{slug}/avatar")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"
    exported = http.get(f"/api/characters/{slug}/export", params={"format": "png"})
    assert exported.content.startswith(PNG_SIGNATURE)  # a plain generated image
    assert import_ok(http, "faceless.png", exported.content)["name"] == "Faceless"

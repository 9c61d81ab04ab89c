"""Card files: every real PNG card reads, and every card survives JSON, PNG and CHARX."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from limelight.characters import (
    CardError,
    CharacterCard,
    charx,
    export_charx,
    export_json,
    export_png,
    files,
    parse_card,
    png,
    read_card_file,
)
from limelight.characters.card import Asset

CHARA_HOLDS_V3 = "the 'chara' chunk holds a chara_card_v3 card; the spec puts V2 there"


def png_rows(manifest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in manifest if row["cards"]]


def decoded_json(shared_data: Path, row: dict[str, Any], chunk: str) -> Any:
    stem = row["file"].removesuffix(".png").removesuffix("_v2+v3")
    return json.loads((shared_data / "cards" / f"{stem}.{chunk}.json").read_text())


def pixels(image_bytes: bytes) -> tuple[tuple[int, int], bytes]:
    image = Image.open(io.BytesIO(image_bytes))
    return image.size, image.convert("RGBA").tobytes()


def png_text(data: bytes) -> dict[str, str]:
    image = Image.open(io.BytesIO(data))
    assert isinstance(image, PngImagePlugin.PngImageFile)
    return dict(image.text)


def test_manifest_covers_the_cards_folder(
    shared_data: Path, manifest: list[dict[str, Any]]
) -> None:
    pngs = {p.name for p in (shared_data / "cards").glob("*.png")}
    assert pngs == {row["file"] for row in manifest}
    assert len(png_rows(manifest)) == 14


def test_every_real_png_card_reads(shared_data: Path, manifest: list[dict[str, Any]]) -> None:
    for row in png_rows(manifest):
        data = (shared_data / "cards" / row["file"]).read_bytes()
        imported = read_card_file(data, row["file"])
        winner = "ccv3" if "ccv3" in row["cards"] else "chara"
        assert imported.format == "png"
        assert imported.card.name == row["cards"][winner]["name"]
        book = imported.card.character_book
        assert len(book.entries if book else []) == row["cards"][winner]["character_book_entries"]
        assert len(imported.card.alternate_greetings) == row["cards"][winner]["alternate_greetings"]
        assert imported.card == parse_card(decoded_json(shared_data, row, winner)).card
        assert imported.avatar is not None
        assert pixels(imported.avatar) == pixels(data)  # the same image, card chunks removed
        assert png_text(imported.avatar) == {}
        has_v3_in_chara = row["cards"].get("chara", {}).get("spec") == "chara_card_v3"
        assert (CHARA_HOLDS_V3 in imported.warnings) == has_v3_in_chara, row["file"]


def test_the_invalid_png_raises_a_clear_error(shared_data: Path) -> None:
    data = (shared_data / "cards" / "choral_invalid-character.png").read_bytes()
    with pytest.raises(CardError) as caught:
        read_card_file(data, "choral_invalid-character.png")
    assert str(caught.value) == (
        "choral_invalid-character.png: this PNG holds no character card "
        "(no 'chara' or 'ccv3' text chunk)"
    )


def test_every_card_survives_every_format(
    shared_data: Path, manifest: list[dict[str, Any]]
) -> None:
    for row in png_rows(manifest):
        original = read_card_file((shared_data / "cards" / row["file"]).read_bytes())
        v3 = original.card.to_v3()
        assert original.avatar is not None
        for blob in (
            export_json(original.card),
            export_png(original.card, original.avatar),
            export_charx(original.card, original.avatar, original.assets),
        ):
            back = read_card_file(blob)
            assert back.card.to_v3() == v3, (row["file"], back.format)
            assert back.warnings == []
            if back.format != "json":
                assert back.avatar is not None
                assert pixels(back.avatar) == pixels(original.avatar)


def test_exported_png_carries_a_v2_and_a_v3_chunk(shared_data: Path) -> None:
    data = (shared_data / "cards" / "st_default_Seraphina.png").read_bytes()
    card = read_card_file(data).card
    text = png_text(export_png(card, None))
    v2 = json.loads(base64.b64decode(text["chara"]))
    v3 = json.loads(base64.b64decode(text["ccv3"]))
    assert v2["spec"] == "chara_card_v2" and v2["data"]["name"] == "Seraphina"
    assert v3 == card.to_v3()


def test_png_export_without_an_avatar_draws_a_plain_image() -> None:
    card = CharacterCard(name="Nobody")
    data = export_png(card, None)
    assert Image.open(io.BytesIO(data)).size == png.PLAIN_AVATAR_SIZE
    assert read_card_file(data).card == card


def test_png_export_converts_other_image_formats() -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(jpeg, "JPEG")
    data = export_png(CharacterCard(name="J"), jpeg.getvalue())
    assert data.startswith(png.PNG_SIGNATURE)
    assert Image.open(io.BytesIO(data)).size == (40, 30)


def card_png(chunks: dict[str, str]) -> bytes:
    base = io.BytesIO()
    Image.new("RGB", (8, 8)).save(base, "PNG")
    return png.write_card_chunks(base.getvalue(), chunks)


def test_ccv3_wins_over_chara() -> None:
    v2 = CharacterCard(name="Old").to_v2()
    v3 = CharacterCard(name="New").to_v3()
    data = card_png({"chara": png.encode_chunk(v2), "ccv3": png.encode_chunk(v3)})
    imported = read_card_file(data)
    assert imported.card.name == "New"
    assert imported.warnings == []


def test_a_damaged_ccv3_falls_back_to_chara() -> None:
    data = card_png({"chara": png.encode_chunk(CharacterCard(name="Old").to_v2()), "ccv3": "!!"})
    imported = read_card_file(data)
    assert imported.card.name == "Old"
    assert imported.warnings[0].startswith("the 'ccv3' chunk is unusable:")


def test_bare_json_in_a_chunk_is_accepted() -> None:
    data = card_png({"chara": json.dumps(CharacterCard(name="Bare").to_v2())})
    assert read_card_file(data).card.name == "Bare"


def test_charx_avatar_comes_from_the_icon_asset() -> None:
    icon = io.BytesIO()
    Image.new("RGB", (5, 5), (1, 2, 3)).save(icon, "PNG")
    card = CharacterCard(
        name="Iconic",
        assets=[Asset("icon", "embeded://assets/icon/images/face.png", "main", "png")],
    )
    extra = {"assets/other/images/bg.png": b"not really a png"}
    data = export_charx(card, icon.getvalue(), extra)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert names == ["card.json", "assets/icon/images/face.png", "assets/other/images/bg.png"]
    imported = read_card_file(data, "iconic.charx")
    assert imported.avatar == icon.getvalue()
    assert imported.assets["assets/other/images/bg.png"] == b"not really a png"
    assert export_charx(card, icon.getvalue(), extra) == data  # deterministic bytes


def test_charx_without_icon_asset_uses_the_icon_folder_or_nothing() -> None:
    card = CharacterCard(name="Plain")
    icon = png.plain_avatar("x")
    assert read_card_file(export_charx(card, icon)).avatar == icon
    assert read_card_file(export_charx(card, None)).avatar is None


def zip_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, blob in members.items():
            archive.writestr(name, blob)
    return out.getvalue()


CARD_JSON = json.dumps(CharacterCard(name="Z").to_v3()).encode()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"readme.txt": b"hi"}, "the CHARX has no card.json at its root"),
        ({"card.json": b"{nope"}, "card.json is not valid JSON"),
        ({"card.json": CARD_JSON, "assets/bomb.bin": bytes(4 * 2**20)}, "looks like a zip bomb"),
        ({"card.json": CARD_JSON, "../escape.png": b"x"}, "points outside the archive"),
        ({"card.json": CARD_JSON, "/etc/passwd": b"x"}, "points outside the archive"),
    ],
)
def test_bad_charx_files_raise_clear_errors(members: dict[str, bytes], message: str) -> None:
    with pytest.raises(CardError, match=message):
        read_card_file(zip_of(members), "bad.charx")


def test_charx_file_count_and_size_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    data = zip_of({"card.json": CARD_JSON, "a": b"1", "b": b"2"})
    monkeypatch.setattr(charx, "MAX_CHARX_FILES", 2)
    with pytest.raises(CardError, match="holds 3 files, over the 2 limit"):
        read_card_file(data)
    monkeypatch.setattr(charx, "MAX_CHARX_FILES", 100)
    monkeypatch.setattr(charx, "MAX_CHARX_TOTAL_BYTES", 10)
    with pytest.raises(CardError, match="over the 10 limit"):
        read_card_file(data)


def test_oversized_images_are_refused() -> None:
    big = io.BytesIO()
    Image.new("1", (6100, 6100)).save(big, "PNG")  # 37 Mpx in a few KB: a pixel bomb
    data = png.write_card_chunks(big.getvalue(), {"chara": png.encode_chunk({"name": "x"})})
    assert len(data) < 200_000
    with pytest.raises(CardError, match="over the 36,000,000 pixel limit"):
        read_card_file(data, "bomb.png")


def test_oversized_files_and_json_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_JSON_BYTES", 50)
    with pytest.raises(CardError, match="the JSON is over the 50 byte limit"):
        read_card_file(CARD_JSON)
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 10)
    with pytest.raises(CardError, match=r"big\.json: it is .* bytes, over the 10 byte limit"):
        read_card_file(CARD_JSON, "big.json")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF89a....", "mystery.bin: unknown format: expected a PNG card, a CHARX"),
        (b'{"name": ', "mystery.bin: not valid JSON"),
        (b"\x89PNG\r\n\x1a\nbroken", "mystery.bin: not a readable PNG image"),
        (b"PK\x03\x04broken", "mystery.bin: not a readable CHARX"),
        (b'{"entries": {}}', "mystery.bin: this is a lorebook (World Info) file"),
    ],
)
def test_unreadable_files_name_the_file_and_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(CardError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_card_file(data, "mystery.bin")


def test_a_v3_card_alone_in_the_chara_chunk_is_read_with_a_warning() -> None:
    data = card_png({"chara": png.encode_chunk(CharacterCard(name="Three").to_v3())})
    imported = read_card_file(data)
    assert imported.card.name == "Three"
    assert imported.warnings == [CHARA_HOLDS_V3]


def test_charx_icon_never_carries_an_old_card() -> None:
    old_card_png = export_png(CharacterCard(name="Old"), None)
    data = export_charx(CharacterCard(name="New"), old_card_png)
    imported = read_card_file(data)
    assert imported.avatar is not None and png_text(imported.avatar) == {}


def test_a_damaged_avatar_is_refused_on_export() -> None:
    good = png.plain_avatar("x")
    broken = good[: len(good) // 2]
    with pytest.raises(CardError, match="damaged"):
        export_png(CharacterCard(name="B"), broken)

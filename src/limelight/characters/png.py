"""Character cards inside PNG images: base64 JSON in `tEXt` chunks `chara` (V2) and `ccv3` (V3).

Pillow reads the image and its text chunks (with its own guards against compressed-text
bombs); chunk framing for splicing new chunks in and old ones out also uses Pillow's
`ChunkStream`/`putchunk`, so an avatar is never re-encoded: pixels, colour profile and
compression stay as they were.  Owns the PNG container only; which chunk wins and what the
JSON means is `files.py`'s and `parse.py`'s business.
"""

from __future__ import annotations

import base64
import binascii
import colorsys
import io
import json
import struct
import zlib
from collections.abc import Iterator

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from limelight.characters.errors import CardError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_CHUNKS = ("ccv3", "chara")  # V3 first: it wins when both are present
MAX_IMAGE_PIXELS = 36_000_000  # 6000 x 6000; larger "avatars" are refused as likely bombs
MAX_CHUNK_CHARS = 24 * 2**20  # base64 of a 16 MiB card, the same cap as card JSON elsewhere
PLAIN_AVATAR_SIZE = (512, 512)
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error)


def is_png(data: bytes) -> bool:
    return data.startswith(PNG_SIGNATURE)


def read_card_chunks(data: bytes) -> tuple[dict[str, str], bytes]:
    """PNG bytes → ({chunk keyword: text} for card chunks, the image without them)."""
    image = open_image(data, "PNG")
    assert isinstance(image, PngImagePlugin.PngImageFile)
    try:
        text = image.text  # loads the image: text chunks may follow the pixel data
    except (*_IMAGE_ERRORS, Image.DecompressionBombError) as error:
        raise CardError(f"the PNG is damaged or its text chunks too large ({error})") from error
    chunks = {name: str(text[name]) for name in CARD_CHUNKS if name in text}
    return chunks, strip_card_chunks(data)


def open_image(data: bytes, kind: str | None = None) -> Image.Image:
    """Open image bytes with Pillow, refusing anything past MAX_IMAGE_PIXELS."""
    try:
        image = Image.open(io.BytesIO(data), formats=[kind] if kind else None)
    except (*_IMAGE_ERRORS, Image.DecompressionBombError) as error:
        raise CardError(
            f"not a readable {kind or ''} image ({error})".replace("  ", " ")
        ) from error
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise CardError(
            f"image is {width}x{height} pixels, over the {MAX_IMAGE_PIXELS:,} pixel limit"
        )
    return image


def decode_chunk(name: str, text: str) -> object:
    """A card chunk's text → JSON value (base64 JSON, or bare JSON some tools write)."""
    stripped = text.strip()
    if len(stripped) > MAX_CHUNK_CHARS:
        raise CardError(f"the '{name}' chunk is over the {MAX_CHUNK_CHARS:,} character limit")
    try:
        raw = stripped.encode() if stripped.startswith("{") else base64.b64decode(stripped)
        return json.loads(raw.decode("utf-8-sig"))
    except (binascii.Error, ValueError) as error:
        raise CardError(f"the '{name}' chunk does not hold base64 JSON ({error})") from error


def encode_chunk(card: object) -> str:
    return base64.b64encode(json.dumps(card, ensure_ascii=False).encode()).decode("ascii")


def as_png(image: bytes) -> bytes:
    """Any image Pillow reads → PNG bytes (PNG input is checked and returned unchanged)."""
    opened = open_image(image)
    try:
        opened.load()
    except (*_IMAGE_ERRORS, Image.DecompressionBombError) as error:
        raise CardError(f"the avatar image is damaged ({error})") from error
    if is_png(image):
        return image
    if opened.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
        opened = opened.convert("RGBA")
    out = io.BytesIO()
    try:
        opened.save(out, "PNG", icc_profile=opened.info.get("icc_profile"))
    except _IMAGE_ERRORS as error:
        raise CardError(f"the avatar image cannot be converted to PNG ({error})") from error
    return out.getvalue()


def plain_avatar(seed: str) -> bytes:
    """A flat-coloured PNG for a card with no avatar; the colour follows `seed`."""
    hue = zlib.crc32(seed.encode()) % 360 / 360
    colour = tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, 0.35, 0.8))
    out = io.BytesIO()
    Image.new("RGB", PLAIN_AVATAR_SIZE, colour).save(out, "PNG")
    return out.getvalue()


def write_card_chunks(png: bytes, chunks: dict[str, str]) -> bytes:
    """Return `png` with its old card chunks removed and `chunks` added as tEXt before IEND."""
    out = io.BytesIO()
    out.write(PNG_SIGNATURE)
    for cid, raw, body in _chunks(png):
        if cid == b"IEND":
            for name, text in chunks.items():
                PngImagePlugin.putchunk(out, b"tEXt", name.encode("latin-1"), b"\0", text.encode())
        if not _is_card_chunk(cid, body):
            out.write(raw)
    return out.getvalue()


def strip_card_chunks(png: bytes) -> bytes:
    return write_card_chunks(png, {})


def _is_card_chunk(cid: bytes, body: bytes) -> bool:
    return cid in _TEXT_CHUNKS and body.split(b"\0", 1)[0].decode("latin-1") in CARD_CHUNKS


def _chunks(png: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(chunk type, the chunk's raw bytes, its body) for each chunk up to IEND."""
    fp = io.BytesIO(png)
    fp.seek(len(PNG_SIGNATURE))
    stream = PngImagePlugin.ChunkStream(fp)
    while True:
        try:
            cid, pos, length = stream.read()
        except (SyntaxError, struct.error) as error:
            raise CardError(f"the PNG is damaged ({error})") from error
        body = fp.read(length)
        if len(body) != length or len(fp.read(4)) != 4:
            raise CardError("the PNG is truncated")
        yield cid, png[pos - 8 : pos + length + 4], body
        if cid == b"IEND":
            return

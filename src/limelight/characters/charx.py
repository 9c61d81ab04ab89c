"""CHARX: a zip holding `card.json` (Character Card V3) and the card's asset files.

Assets are referenced from `card.json` as `embeded://path/in/zip` (the spec's spelling).
Reading is guarded against zip bombs: a cap on the number of files, on each file's and the
total unpacked size (zipfile never yields more than an entry's declared size, so declared
sizes bound the work), and on the compression ratio.  Paths that could escape a folder
(`..`, absolute) are refused.  Owns the zip container; the card's meaning is `parse.py`'s.
"""

from __future__ import annotations

import io
import json
import posixpath
import zipfile
from collections.abc import Mapping

from limelight.characters.errors import CardError

ZIP_SIGNATURE = b"PK\x03\x04"
CARD_JSON = "card.json"
DEFAULT_ICON_PATH = "assets/icon/images/main.png"
MAX_CHARX_FILES = 2_000
MAX_CHARX_FILE_BYTES = 64 * 2**20
MAX_CHARX_TOTAL_BYTES = 256 * 2**20
MAX_CARD_JSON_BYTES = 16 * 2**20
MAX_COMPRESSION_RATIO = 200  # checked on files over 1 MiB unpacked
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # written files carry no clock: same card, same bytes


def is_zip(data: bytes) -> bool:
    return data.startswith(ZIP_SIGNATURE)


def read_charx(data: bytes) -> tuple[object, dict[str, bytes]]:
    """CHARX bytes → (the parsed card.json, {path: bytes} for every other file)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise CardError(f"not a readable CHARX (zip) file ({error})") from error
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        _check_sizes(infos)
        files = {_safe_path(info.filename): _read_member(archive, info) for info in infos}
    card_json = files.pop(CARD_JSON, None)
    if card_json is None:
        raise CardError(f"the CHARX has no {CARD_JSON} at its root")
    if len(card_json) > MAX_CARD_JSON_BYTES:
        raise CardError(f"{CARD_JSON} is over the {MAX_CARD_JSON_BYTES:,} byte limit")
    try:
        return json.loads(card_json.decode("utf-8-sig")), files
    except ValueError as error:
        raise CardError(f"{CARD_JSON} is not valid JSON ({error})") from error


def write_charx(card: Mapping[str, object], files: Mapping[str, bytes]) -> bytes:
    """A CHARX of `card` (a V3 dict) and `files` ({path in zip: bytes}), deterministic."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        _write(archive, CARD_JSON, json.dumps(card, ensure_ascii=False, indent=2).encode())
        for path in sorted(files):
            if path != CARD_JSON:
                _write(archive, _safe_path(path), files[path])
    return out.getvalue()


def _write(archive: zipfile.ZipFile, path: str, blob: bytes) -> None:
    info = zipfile.ZipInfo(path, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, blob)


def _check_sizes(infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > MAX_CHARX_FILES:
        raise CardError(f"the CHARX holds {len(infos):,} files, over the {MAX_CHARX_FILES:,} limit")
    total = sum(info.file_size for info in infos)
    if total > MAX_CHARX_TOTAL_BYTES:
        raise CardError(
            f"the CHARX unpacks to {total:,} bytes, over the {MAX_CHARX_TOTAL_BYTES:,} limit"
        )
    for info in infos:
        if info.file_size > MAX_CHARX_FILE_BYTES:
            raise CardError(
                f"'{info.filename}' unpacks to {info.file_size:,} bytes, "
                f"over the {MAX_CHARX_FILE_BYTES:,} limit"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > 2**20 and ratio > MAX_COMPRESSION_RATIO:
            raise CardError(
                f"'{info.filename}' is compressed {ratio:.0f}:1, which looks like a zip bomb"
            )


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        with archive.open(info) as member:
            return member.read(info.file_size + 1)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as error:
        raise CardError(f"cannot unpack '{info.filename}' from the CHARX ({error})") from error


def _safe_path(path: str) -> str:
    normal = posixpath.normpath(path.replace("\\", "/"))
    if normal.startswith(("/", "../")) or normal == ".." or ":" in normal.split("/")[0]:
        raise CardError(f"the CHARX path {path!r} points outside the archive")
    return normal

"""How one lorebook key matches a piece of text.

A key is either plain text or a regular expression written as `/pattern/flags`, the way
SillyTavern writes it (flags `i`, `m`, `s` are honoured; `g`, `u`, `y` mean nothing to a
yes/no search and are ignored).  Plain keys match as substrings, or, with whole-word
matching on, only where no word character touches either end (multi-word keys too, where
SillyTavern falls back to substrings).  Regex keys ignore the case and whole-word settings,
as in SillyTavern.  Hand-written rather than borrowed: this is the scanner's own semantics.
"""

from __future__ import annotations

import re
from functools import lru_cache

_REGEX_KEY = re.compile(r"^/(.+)/([a-z]*)$", re.DOTALL)
_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "g": 0, "u": 0, "y": 0}


def is_regex_key(key: str) -> bool:
    return _REGEX_KEY.match(key.strip()) is not None


def regex_key_error(key: str) -> str | None:
    """Why a `/pattern/flags` key cannot be used, or None when it can (or is plain text)."""
    found = _REGEX_KEY.match(key.strip())
    if found is None:
        return None
    unknown = sorted(set(found.group(2)) - set(_FLAGS))
    if unknown:
        return f"unknown regex flag(s) {''.join(unknown)!r}"
    try:
        _compile_regex_key(key.strip())
    except re.error as error:
        return f"not a valid regular expression ({error})"
    return None


@lru_cache(maxsize=4096)
def _compile_regex_key(key: str) -> re.Pattern[str]:
    found = _REGEX_KEY.match(key)
    assert found is not None
    flags = 0
    for letter in found.group(2):
        flags |= _FLAGS.get(letter, 0)
    return re.compile(found.group(1), flags)


@lru_cache(maxsize=4096)
def _whole_word_pattern(key: str, case_sensitive: bool) -> re.Pattern[str]:
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.compile(rf"(?<!\w){re.escape(key)}(?!\w)", flags)


def key_matches(key: str, text: str, *, case_sensitive: bool, whole_words: bool) -> bool:
    """Does `key` occur in `text`?  Blank keys and unusable regex keys never match."""
    key = key.strip()
    if not key:
        return False
    if is_regex_key(key):
        if regex_key_error(key) is not None:
            return False
        return _compile_regex_key(key).search(text) is not None
    if whole_words:
        return _whole_word_pattern(key, case_sensitive).search(text) is not None
    if case_sensitive:
        return key in text
    return key.lower() in _lowered(text)


@lru_cache(maxsize=64)
def _lowered(text: str) -> str:
    """The scanner asks about one text for many keys: lower-case it once."""
    return text.lower()

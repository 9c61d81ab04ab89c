"""`slugify`: a character's name as a short, safe, lowercase file or URL name."""

from __future__ import annotations

import re
import unicodedata

MAX_SLUG_LENGTH = 64
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(name: str, fallback: str = "character") -> str:
    """ "Gloria, PA" → "gloria-pa"; accents folded, other scripts dropped; never empty."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = _NOT_SLUG.sub("-", ascii_name.lower()).strip("-")
    slug = slug[:MAX_SLUG_LENGTH].rstrip("-")
    return slug or fallback

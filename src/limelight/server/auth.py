"""API keys: created once and shown once, stored only as SHA-256, each tied to a user.

With no key in the store the server trusts the caller to name its user (the OpenAI
`user` field, a `user` query parameter) and serves only on loopback.  Once a key exists,
every request needs one, and a key only ever reaches its own user's data.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from limelight.store import ApiKey, User

PREFIX = "ll-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(db: Session, user_id: str, name: str = "") -> str:
    """A new key for `user_id` (created if new); the plain key is returned once, never stored."""
    if db.get(User, user_id) is None:
        db.add(User(id=user_id))
        db.flush()  # the tables have no ORM relationship: the user row must go in first
    key = PREFIX + secrets.token_urlsafe(32)
    db.add(ApiKey(user_id=user_id, key_hash=hash_key(key), name=name))
    return key


def keys_required(db: Session) -> bool:
    return bool(db.scalar(select(func.count()).select_from(ApiKey)))


def user_for_key(db: Session, key: str) -> str | None:
    row = db.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    return row.user_id if row is not None else None

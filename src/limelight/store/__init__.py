"""limelight's persistence: the relational schema, its migrations and the `Store`.

Product packages (`characters`, `chat`, `memory`) read and write these tables; the store
itself holds no product logic and imports nothing else of limelight.
"""

from limelight.store.database import Store, StoreError, default_url
from limelight.store.tables import (
    ApiKey,
    Base,
    Character,
    CharacterAsset,
    ChatSession,
    Memory,
    MemoryJob,
    Message,
    User,
    new_id,
    utcnow,
)

__all__ = [
    "ApiKey",
    "Base",
    "Character",
    "CharacterAsset",
    "ChatSession",
    "Memory",
    "MemoryJob",
    "Message",
    "Store",
    "StoreError",
    "User",
    "default_url",
    "new_id",
    "utcnow",
]

"""/api/me: the user a caller acts as, and whether the server asks for API keys.

The web app learns its user here once it has a key (a key's user is the only one it may
act as); without keys the caller names its user, as on every other route.
"""

from __future__ import annotations

from fastapi import APIRouter

from limelight.server.deps import CallerDep

router = APIRouter(prefix="/api", tags=["me"])


@router.get("/me")
def read_me(caller: CallerDep, user: str | None = None) -> dict[str, object]:
    """401 without a valid key where keys are required, 403 for another key's user."""
    return {"user": caller.user(user), "keys_required": caller.key_user is not None}

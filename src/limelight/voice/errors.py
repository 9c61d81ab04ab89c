"""The voice layer's two user-facing errors.

Both derive from ValueError so that a caller (the HTTP layer) can answer any of them as a
bad request; the message always names the problem and what would be accepted instead.
"""

from __future__ import annotations


class VoiceError(ValueError):
    """Bad input from a user: an unknown backend or voice, a profile value out of range,
    empty or oversized text or audio."""


class AudioDecodeError(VoiceError):
    """Bytes that are not decodable audio (or decode to no samples at all)."""

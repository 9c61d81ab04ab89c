"""The one error the characters package raises on purpose: input that holds no usable card.

Files and JSON from other apps break their specs all the time; everything with an obvious
repair is repaired and reported as a warning string instead (see `fields.py`).
"""

from __future__ import annotations

from limelight.engine.errors import LimelightError


class CardError(LimelightError, ValueError):
    """Bytes or JSON that hold no character card or lorebook; the message names the problem."""

"""`VoiceProfile`: how one character (or one request) should sound.

A profile names a backend and a voice and three backend-independent knobs (speaking
rate, pitch, prosodic variability) as multipliers around the voice's natural delivery.
This module validates the values and converts to and from the JSON object stored in a
character card (`extensions.limelight.voice`); it knows nothing about which voices are
installed (the `Speech` service checks that) or how a backend turns the knobs into sound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from limelight.voice.errors import VoiceError

BACKEND_NAMES = ("piper", "espeak")
RATE_RANGE = (0.5, 2.0)  # speaking-rate multiplier; 2.0 = twice as fast
PITCH_RANGE = (0.5, 2.0)  # pitch multiplier; 2.0 = an octave up
VARIABILITY_RANGE = (0.0, 1.0)  # 0 = flat and regular, 1 = lively, 0.5 = the voice's own


@dataclass(frozen=True, slots=True)
class VoiceProfile:
    backend: str
    voice: str
    rate: float = 1.0
    pitch: float = 1.0
    variability: float = 0.5

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_NAMES:
            raise VoiceError(
                f"unknown voice backend {self.backend!r}; use one of {', '.join(BACKEND_NAMES)}"
            )
        if not isinstance(self.voice, str) or not self.voice.strip():
            raise VoiceError("a voice profile needs a voice name (a non-empty string)")
        for name, (low, high) in (
            ("rate", RATE_RANGE),
            ("pitch", PITCH_RANGE),
            ("variability", VARIABILITY_RANGE),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise VoiceError(f"voice {name} must be a number from {low} to {high}")
            if not low <= value <= high:
                raise VoiceError(f"voice {name} {value} is out of range; use {low} to {high}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> VoiceProfile:
        """The profile stored as `data` (None: the default profile)."""
        if data is None:
            return DEFAULT_PROFILE
        if not isinstance(data, Mapping):
            raise VoiceError("a voice profile must be a JSON object")
        known = [field.name for field in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise VoiceError(
                f"unknown voice profile key(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(known)}"
            )
        for key in ("backend", "voice"):
            if key not in data:
                raise VoiceError(
                    f"a voice profile needs {key!r} (allowed keys: {', '.join(known)})"
                )
            if not isinstance(data[key], str):
                raise VoiceError(f"voice profile {key!r} must be a string")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_PROFILE = VoiceProfile(backend="piper", voice="en_US-joe-medium")

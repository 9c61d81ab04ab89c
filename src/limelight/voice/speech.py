"""`Speech`: the text-to-speech service the rest of limelight calls.

It owns the backends (created on first use, one of each, shared by every thread), checks
what a user sends (text length, that the voice exists) and turns voice names into
profiles: a backend's own voice name, "backend:voice", or one of OpenAI's voice names so
that clients written for OpenAI's speech API work unchanged.  It does not split text into
sentences (see sentences.py) or encode audio (codec.py).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from limelight.voice.audio import Audio
from limelight.voice.backends import BACKENDS, BackendOptions, TTSBackend, VoiceInfo
from limelight.voice.errors import VoiceError
from limelight.voice.profile import VoiceProfile

MAX_INPUT_CHARS = 4096  # OpenAI's limit for one speech request


def _piper(pitch: float, rate: float, variability: float) -> VoiceProfile:
    return VoiceProfile("piper", "en_US-joe-medium", rate, pitch, variability)


# OpenAI's voices, each a fixed and distinct profile (pitches at least 6% apart, or a
# different backend); the installed voice is one American man, so the "female" names are
# him pitched up.
OPENAI_VOICES: dict[str, VoiceProfile] = {
    "alloy": _piper(pitch=1.0, rate=1.0, variability=0.5),
    "ash": _piper(pitch=0.88, rate=1.05, variability=0.4),
    "ballad": _piper(pitch=1.07, rate=0.88, variability=0.75),
    "coral": _piper(pitch=1.3, rate=1.05, variability=0.6),
    "echo": _piper(pitch=0.8, rate=0.95, variability=0.4),
    "fable": VoiceProfile("espeak", "en-gb-x-rp+m3", rate=0.95, pitch=1.0, variability=0.6),
    "onyx": _piper(pitch=0.72, rate=0.92, variability=0.35),
    "nova": _piper(pitch=1.4, rate=1.1, variability=0.65),
    "sage": _piper(pitch=1.15, rate=0.95, variability=0.45),
    "shimmer": _piper(pitch=1.22, rate=1.12, variability=0.55),
    "verse": _piper(pitch=0.94, rate=0.85, variability=0.8),
}


class Speech:
    """Text to speech; safe to share between threads."""

    def __init__(self, num_threads: int = 1, voice_dirs: Sequence[str | Path] = ()) -> None:
        self._options = BackendOptions(num_threads, tuple(Path(path) for path in voice_dirs))
        self._backends: dict[str, TTSBackend] = {}
        self._lock = threading.Lock()

    def voices(self) -> list[VoiceInfo]:
        """Every backend's voices worth offering in a picker."""
        return [info for name in BACKENDS for info in self.backend(name).voices()]

    def synthesize(self, text: str, profile: VoiceProfile) -> Audio:
        if not text.strip():
            raise VoiceError("nothing to say: the text is empty")
        if len(text) > MAX_INPUT_CHARS:
            raise VoiceError(
                f"the text is {len(text)} characters; at most {MAX_INPUT_CHARS} per request"
            )
        backend = self.backend(profile.backend)
        if not backend.has_voice(profile.voice):
            raise VoiceError(
                f"unknown {profile.backend} voice {profile.voice!r}; "
                f"known: {_names(backend.voices())}"
            )
        return backend.synthesize(text, profile)

    def resolve(self, name: str) -> VoiceProfile:
        """The profile for a voice name: "en_US-joe-medium", "en-us+f3", "piper:NAME",
        "espeak:NAME" or an OpenAI voice ("alloy", "nova", ...)."""
        key = name.strip()
        if key.lower() in OPENAI_VOICES:
            return OPENAI_VOICES[key.lower()]
        prefix, colon, rest = key.partition(":")
        candidates = [prefix] if colon and prefix in BACKENDS else list(BACKENDS)
        voice = rest if colon and prefix in BACKENDS else key
        for backend in candidates:
            if voice and self.backend(backend).has_voice(voice):
                return VoiceProfile(backend, voice)
        raise VoiceError(
            f"unknown voice {name!r}; known: {', '.join(OPENAI_VOICES)}, "
            f"{_names(self.voices())} (any espeak-ng language or language+variant works too)"
        )

    def backend(self, name: str) -> TTSBackend:
        """The backend called `name`, created on first use."""
        if name not in BACKENDS:
            raise VoiceError(f"unknown voice backend {name!r}; use one of {', '.join(BACKENDS)}")
        with self._lock:
            if name not in self._backends:
                self._backends[name] = BACKENDS[name](self._options)
            return self._backends[name]


def _names(voices: list[VoiceInfo]) -> str:
    return ", ".join(info.voice for info in voices)

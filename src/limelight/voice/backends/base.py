"""The text-to-speech backend contract and the registry of backends.

A backend turns text and a `VoiceProfile` into `Audio` for the voices it knows; it loads
its models lazily and must be safe to call from several threads.  It does not split long
text (the caller streams sentence-sized pieces), check input length or resolve voice
names across backends: that is the `Speech` service's job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from limelight.voice.audio import Audio
from limelight.voice.profile import VoiceProfile


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    backend: str
    voice: str
    label: str  # for a voice picker: "Joe (US English, Piper)"


@dataclass(frozen=True, slots=True)
class BackendOptions:
    num_threads: int = 1  # CPU threads one synthesis may use
    voice_dirs: Sequence[Path] = field(default_factory=tuple)  # extra model folders

    def __post_init__(self) -> None:
        assert self.num_threads >= 1, self.num_threads


class TTSBackend(ABC):
    name: str  # the `backend` of the profiles it speaks

    def __init__(self, options: BackendOptions) -> None:
        self.options = options

    @abstractmethod
    def voices(self) -> list[VoiceInfo]:
        """The voices worth offering in a picker (others may also be accepted)."""

    @abstractmethod
    def has_voice(self, voice: str) -> bool:
        """Whether `synthesize` accepts this voice name."""

    @abstractmethod
    def synthesize(self, text: str, profile: VoiceProfile) -> Audio:
        """`text` spoken as `profile` says; the voice must be one `has_voice` accepts."""


BACKENDS: dict[str, type[TTSBackend]] = {}


def register_backend(backend: type[TTSBackend]) -> type[TTSBackend]:
    """Class decorator: make `backend` available under its `name`."""
    assert backend.name not in BACKENDS, f"backend {backend.name!r} registered twice"
    BACKENDS[backend.name] = backend
    return backend

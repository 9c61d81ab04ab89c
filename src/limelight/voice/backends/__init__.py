"""Text-to-speech backends: the contract (base.py) and the built-in implementations,
registered in `BACKENDS` by importing them here, the same way an extension would."""

from limelight.voice.backends import espeak, piper
from limelight.voice.backends.base import (
    BACKENDS,
    BackendOptions,
    TTSBackend,
    VoiceInfo,
    register_backend,
)

__all__ = [
    "BACKENDS",
    "BackendOptions",
    "TTSBackend",
    "VoiceInfo",
    "espeak",
    "piper",
    "register_backend",
]

"""Fixtures for the voice tests: one speech service and one transcriber per session (the
models load once), and the sentences the intelligibility tests speak."""

from __future__ import annotations

import numpy as np
import pytest

from limelight.voice import Audio, Speech, Transcriber

# Plain everyday sentences, each word common enough that a recogniser's errors are the
# voice's fault rather than the vocabulary's.
SENTENCES = (
    "The weather is lovely today, so we should go for a walk in the park.",
    "Please put the blue book back on the top shelf.",
    "My brother bought a new bicycle last summer.",
    "Could you tell me the way to the railway station?",
    "She opened the window and the cold air rushed in.",
    "We need three eggs, some flour and a little milk.",
    "The children were playing football in the garden.",
    "I will call you tomorrow morning after breakfast.",
)


@pytest.fixture(scope="session")
def speech() -> Speech:
    return Speech(num_threads=1)


@pytest.fixture(scope="session")
def transcriber() -> Transcriber:
    return Transcriber(num_threads=2)


def tone(frequency: float, seconds: float = 1.0, sample_rate: int = 22050) -> Audio:
    """A buzzy harmonic tone (like a voiced vowel) with a slow swell, for codec tests."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wave = sum(np.sin(2 * np.pi * frequency * k * t) / k for k in range(1, 6))
    swell = 0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t)
    return Audio((0.3 * wave * swell).astype(np.float32), sample_rate)

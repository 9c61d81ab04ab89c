"""The measuring instruments, checked on signals whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from limelight.voice import Audio
from limelight.voice.analysis import median_pitch, speaking_rate, word_error_rate
from tests.voice.conftest import tone


@pytest.mark.parametrize("frequency", [70.0, 110.0, 180.0, 260.0, 420.0])
def test_median_pitch_of_harmonic_tones(frequency: float) -> None:
    assert median_pitch(tone(frequency)) == pytest.approx(frequency, rel=0.01)


def test_median_pitch_ignores_silence_and_noise() -> None:
    rate = 16000
    noise = np.random.default_rng(1).normal(0, 0.01, rate).astype(np.float32)
    voiced = tone(150.0, 0.6, rate).samples
    audio = Audio(np.concatenate([noise, voiced, np.zeros(rate, np.float32)]), rate)
    assert median_pitch(audio) == pytest.approx(150.0, rel=0.01)
    assert median_pitch(Audio(np.zeros(rate, np.float32), rate)) == 0.0
    assert median_pitch(Audio(np.zeros(10, np.float32), rate)) == 0.0


def test_speaking_rate_leaves_out_pauses() -> None:
    rate = 16000
    word = tone(120.0, 0.4, rate).samples
    short_gap, pause = np.zeros(800, np.float32), np.zeros(rate, np.float32)  # 50 ms, 1 s
    samples = np.concatenate([word, short_gap, word, pause, word, short_gap, word])
    # 4 words in 1.7 s of sound: the 50 ms gaps count as speech, the 1 s pause does not
    assert speaking_rate(Audio(samples, rate), 4) == pytest.approx(4 / 1.7, rel=0.03)
    assert speaking_rate(Audio(np.zeros(rate, np.float32), rate), 3) == 0.0


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("Hello, world!", "hello world", 0.0),
        ("It's a well-known fact.", "its a well known fact", 0.0),
        ("the cat sat on the mat", "the cat sat on a mat", 1 / 6),  # substitution
        ("the cat sat on the mat", "the cat on the mat", 1 / 6),  # deletion
        ("the cat sat on the mat", "the big cat sat on the mat", 1 / 6),  # insertion
        ("one two three", "", 1.0),
        ("one two", "three four five six", 2.0),  # can exceed 1
        ("", "", 0.0),
        ("", "something", 1.0),
    ],
)
def test_word_error_rate(reference: str, hypothesis: str, expected: float) -> None:
    assert word_error_rate(reference, hypothesis) == pytest.approx(expected)

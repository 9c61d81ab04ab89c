"""Audio: duration, concatenation across sample rates, resampling and speeding up."""

from __future__ import annotations

import numpy as np
import pytest

from limelight.voice import Audio
from limelight.voice.analysis import median_pitch
from tests.voice.conftest import tone


def test_duration_and_silence() -> None:
    assert Audio(np.zeros(11025, np.float32), 22050).duration == 0.5
    silence = Audio.silence(0.25, 16000)
    assert len(silence.samples) == 4000 and not silence.samples.any()


def test_concat_resamples_to_the_first_rate() -> None:
    first, second = tone(200, 0.5, 22050), tone(200, 0.25, 16000)
    joined = Audio.concat([first, second])
    assert joined.sample_rate == 22050
    assert joined.duration == pytest.approx(0.75, abs=1e-3)
    assert np.array_equal(joined.samples[: len(first.samples)], first.samples)
    assert Audio.concat([], sample_rate=8000).duration == 0
    with pytest.raises(ValueError, match="sample_rate"):
        Audio.concat([])


def test_resample_keeps_the_sound() -> None:
    audio = tone(220, 1.0, 22050)
    down = audio.resample(16000)
    assert down.sample_rate == 16000 and len(down.samples) == 16000
    assert median_pitch(down) == pytest.approx(220, rel=0.01)
    assert audio.resample(22050) is audio


def test_sped_up_shortens_and_raises_pitch() -> None:
    audio = tone(150, 1.2)
    faster = audio.sped_up(1.25)
    assert faster.sample_rate == audio.sample_rate
    assert faster.duration == pytest.approx(1.2 / 1.25, rel=0.005)
    assert median_pitch(faster) == pytest.approx(150 * 1.25, rel=0.01)


def test_invariants_are_asserted() -> None:
    with pytest.raises(AssertionError):
        Audio(np.zeros((2, 10), np.float32), 16000)
    with pytest.raises(AssertionError):
        Audio(np.zeros(10, np.float64), 16000)

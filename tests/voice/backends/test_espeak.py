"""The espeak-ng backend: voice names, the pitch table, and the sound it makes."""

from __future__ import annotations

import pytest

from limelight.voice import VoiceProfile
from limelight.voice.analysis import median_pitch
from limelight.voice.backends import BackendOptions
from limelight.voice.backends.espeak import EspeakBackend, _pitch_parameter


@pytest.fixture(scope="module")
def espeak() -> EspeakBackend:
    return EspeakBackend(BackendOptions())


@pytest.mark.parametrize(
    ("voice", "known"),
    [
        ("en-us", True),
        ("EN-GB", True),  # espeak-ng's own file for en-gb is called "en"
        ("en-gb-x-rp+m3", True),
        ("en-us+Alex", True),  # variants are matched without regard to case
        ("de+f2", True),
        ("en-us+nope", False),  # espeak-ng would silently ignore the variant
        ("xx-yy", False),
        ("", False),
    ],
)
def test_has_voice(espeak: EspeakBackend, voice: str, known: bool) -> None:
    assert espeak.has_voice(voice) is known


def test_voices_offered_are_all_accepted(espeak: EspeakBackend) -> None:
    voices = espeak.voices()
    assert len(voices) >= 20
    assert all(espeak.has_voice(info.voice) and "eSpeak" in info.label for info in voices)


def test_pitch_parameter_table() -> None:
    assert _pitch_parameter(1.0) == (50, 1.0)
    assert _pitch_parameter(0.694) == (0, pytest.approx(1.0))
    low, residual = _pitch_parameter(0.5)  # below the table: espeak's lowest, then resampled
    assert low == 0 and residual == pytest.approx(0.5 / 0.694)
    high, residual = _pitch_parameter(2.0)
    assert high == 100 and residual == pytest.approx(2.0 / 1.674)
    assert _pitch_parameter(1.159)[0] == 65
    parameters = [_pitch_parameter(pitch)[0] for pitch in (0.7, 0.8, 0.9, 1.1, 1.3, 1.5)]
    assert parameters == sorted(set(parameters))


def test_variants_change_the_voice(espeak: EspeakBackend) -> None:
    text = "Hello there, how are you today?"
    male = espeak.synthesize(text, VoiceProfile("espeak", "en-us+m3"))
    female = espeak.synthesize(text, VoiceProfile("espeak", "en-us+f3"))
    assert median_pitch(female) > 1.6 * median_pitch(male)

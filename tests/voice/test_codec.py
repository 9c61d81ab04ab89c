"""encode/decode: every format round-trips; garbage and empty input get a clear error."""

from __future__ import annotations

import io
import subprocess
import wave
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from limelight.voice import (
    CONTENT_TYPES,
    FORMATS,
    Audio,
    AudioDecodeError,
    VoiceError,
    decode,
    encode,
)
from limelight.voice.analysis import median_pitch
from limelight.voice.codec import PCM_SAMPLE_RATE
from tests.voice.conftest import tone

LOSSLESS = ("wav", "pcm", "flac")


def decoded(data: bytes, fmt: str, sample_rate: int) -> Audio:
    if fmt == "pcm":  # headerless: read it as OpenAI documents it
        samples = np.frombuffer(data, "<i2").astype(np.float32) / 32767.0
        return Audio(samples, PCM_SAMPLE_RATE).resample(sample_rate)
    return decode(data, sample_rate)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(fmt: str) -> None:
    original = tone(180.0, seconds=3.0, sample_rate=22050)
    data = encode(original, fmt)
    assert data and fmt in CONTENT_TYPES
    back = decoded(data, fmt, 22050)
    # lossy codecs pad a few tens of milliseconds (AAC ~90 ms): within 4% of 3 s
    assert back.duration == pytest.approx(original.duration, rel=0.04)
    assert median_pitch(back) == pytest.approx(180.0, rel=0.02)
    if fmt in LOSSLESS:
        n = min(len(back.samples), len(original.samples))
        correlation = np.corrcoef(back.samples[:n], original.samples[:n])[0, 1]
        assert correlation > 0.999


def test_wav_and_pcm_layouts() -> None:
    audio = tone(200.0, seconds=0.5, sample_rate=22050)
    with wave.open(io.BytesIO(encode(audio, "wav"))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 22050)
        assert wav.getnframes() == len(audio.samples)
    assert len(encode(audio, "pcm")) == 2 * PCM_SAMPLE_RATE // 2  # 0.5 s of int16 at 24 kHz


def test_container_signatures() -> None:
    audio = tone(200.0, seconds=0.5)
    assert encode(audio, "wav")[:4] == b"RIFF"
    assert encode(audio, "flac")[:4] == b"fLaC"
    assert encode(audio, "opus")[:4] == b"OggS"
    assert encode(audio, "aac")[0] == 0xFF  # ADTS sync word
    assert CONTENT_TYPES["mp3"] == "audio/mpeg"


def test_decode_resamples_and_mixes_down() -> None:
    audio = tone(300.0, seconds=1.0, sample_rate=44100)
    back = decode(encode(audio, "wav"))
    assert back.sample_rate == 16000 and len(back.samples) == 16000
    assert back.samples.dtype == np.float32


def test_decode_stops_past_max_seconds() -> None:
    back = decode(encode(tone(200.0, seconds=5.0), "flac"), max_seconds=2.0)
    assert back.duration == pytest.approx(3.0, abs=0.05)  # max_seconds + 1 s to tell


def test_unknown_format() -> None:
    with pytest.raises(VoiceError, match="unknown audio format 'ogg'; use one of wav, mp3"):
        encode(tone(200.0), "ogg")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        b"RIFF\x00\x00\x00\x00WAVE",  # a header and nothing else
        encode(Audio(np.zeros(0, np.float32), 16000), "wav"),  # a valid, empty file
    ],
)
def test_garbage_and_empty_audio(data: bytes) -> None:
    with pytest.raises(AudioDecodeError) as error:
        decode(data)
    assert "audio" in str(error.value) and "Traceback" not in str(error.value)


@pytest.mark.parametrize("suffix", [".webm", ".m4a", ".ogg"])
def test_decode_what_browsers_record(suffix: str, tmp_path: Path) -> None:
    """MediaRecorder sends webm/opus (Chrome, Firefox) or mp4/aac with its index at the
    end (Safari), which ffmpeg cannot read from a pipe: both must decode."""
    source, target = tmp_path / "in.wav", tmp_path / f"recording{suffix}"
    source.write_bytes(encode(tone(220.0, seconds=2.0, sample_rate=48000), "wav"))
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(source)]
    subprocess.run([*command, str(target)], check=True)
    data = target.read_bytes()
    if suffix == ".m4a":
        assert data.find(b"moov") > data.find(b"mdat")  # the index really is at the end
    back = decode(data)
    assert back.duration == pytest.approx(2.0, rel=0.05)
    assert median_pitch(back) == pytest.approx(220.0, rel=0.02)

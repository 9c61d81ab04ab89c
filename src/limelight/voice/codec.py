"""Audio to bytes and back: `encode` for the six formats OpenAI's speech API offers,
`decode` for whatever a client uploads.

WAV and raw PCM are written here with the standard library; every compressed format and
every decode goes through the static ffmpeg that imageio-ffmpeg ships, in a subprocess
that reads stdin and writes stdout (no codec code of our own).  This module knows nothing
about speech: it only moves samples between `Audio` and containers.
"""

from __future__ import annotations

import io
import logging
import subprocess
import tempfile
import wave
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from limelight.voice.audio import Audio
from limelight.voice.errors import AudioDecodeError, VoiceError

FORMATS = ("wav", "mp3", "opus", "pcm", "flac", "aac")
CONTENT_TYPES = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",  # Opus in an Ogg container, as OpenAI sends it
    "pcm": "audio/pcm",
    "flac": "audio/flac",
    "aac": "audio/aac",  # ADTS stream
}
PCM_SAMPLE_RATE = 24000  # OpenAI's "pcm": raw 24 kHz signed 16-bit little-endian mono
FFMPEG_TIMEOUT_S = 120.0
# output options per compressed format; speech needs little bitrate
_ENCODER_ARGS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "opus": ["-c:a", "libopus", "-b:a", "32k", "-ar", "48000", "-f", "ogg"],
    "flac": ["-c:a", "flac", "-f", "flac"],
    "aac": ["-c:a", "aac", "-b:a", "64k", "-f", "adts"],
}
_logger = logging.getLogger(__name__)


def encode(audio: Audio, fmt: str) -> bytes:
    """`audio` as a file (or raw stream) in `fmt`, one of FORMATS."""
    if fmt not in FORMATS:
        raise VoiceError(f"unknown audio format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "wav":
        return _encode_wav(audio)
    if fmt == "pcm":
        return _to_int16(audio.resample(PCM_SAMPLE_RATE).samples).tobytes()
    raw_input = ["-f", "f32le", "-ar", str(audio.sample_rate), "-ac", "1", "-i", "pipe:0"]
    result = _run_ffmpeg([*raw_input, *_ENCODER_ARGS[fmt], "pipe:1"], audio.samples.tobytes())
    if result.returncode != 0:  # our own input: a failure here is a bug, not bad input
        raise RuntimeError(f"ffmpeg could not encode {fmt}: {_last_line(result.stderr)}")
    return result.stdout


def decode(data: bytes, sample_rate: int = 16000, max_seconds: float | None = None) -> Audio:
    """Mono float32 audio at `sample_rate` from any container and codec ffmpeg reads (wav,
    webm/opus from a browser's MediaRecorder, ogg, mp3, m4a, flac...).  With
    `max_seconds`, decoding stops a little past that length (the caller checks it)."""
    if not data:
        raise AudioDecodeError("the audio is empty (0 bytes)")
    output = ["-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le"]
    if max_seconds is not None:
        output += ["-t", f"{max_seconds + 1.0:.3f}"]
    result = _run_ffmpeg(["-i", "pipe:0", *output, "pipe:1"], data)
    if result.returncode != 0 and _is_mp4(data):
        # MP4/M4A (Safari's MediaRecorder) may keep its index at the end, which ffmpeg can
        # only reach by seeking: read those from a temporary file instead of a pipe.
        result = _decode_seekable(data, output)
    if result.returncode != 0:
        _logger.debug("ffmpeg could not decode audio: %s", _last_line(result.stderr))
        raise AudioDecodeError(
            "could not decode the audio: not a format ffmpeg reads "
            "(send wav, webm/opus, ogg, mp3, m4a or flac)"
        )
    samples = np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)
    if len(samples) == 0:
        raise AudioDecodeError("the audio decodes to no samples (an empty recording?)")
    return Audio(np.clip(samples, -1.0, 1.0), sample_rate)


def _encode_wav(audio: Audio) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(audio.sample_rate)
        wav.writeframes(_to_int16(audio.samples).tobytes())
    return buffer.getvalue()


def _to_int16(samples: np.ndarray) -> np.ndarray:
    """float [-1, 1] → little-endian int16."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")


def _decode_seekable(data: bytes, output: list[str]) -> subprocess.CompletedProcess[bytes]:
    with tempfile.TemporaryDirectory(prefix="limelight-audio-") as folder:
        path = Path(folder) / "input"
        path.write_bytes(data)
        return _run_ffmpeg(["-i", str(path), *output, "pipe:1"], b"")


def _is_mp4(data: bytes) -> bool:
    return data[4:8] == b"ftyp"


def _run_ffmpeg(args: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *args]
    try:
        return subprocess.run(command, input=stdin, capture_output=True, timeout=FFMPEG_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # answered like any other failure of ffmpeg's
        message = f"timed out after {FFMPEG_TIMEOUT_S:.0f} s".encode()
        return subprocess.CompletedProcess(command, -9, b"", message)


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "(no message)"

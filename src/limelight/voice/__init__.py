"""limelight's voice layer: text to speech, streaming sentence segmentation, audio
encoding and speech to text.

It knows nothing about characters, chat, the engine or HTTP: callers hand it text and a
`VoiceProfile` (a character card stores one as `extensions.limelight.voice`) and get
`Audio` back, or hand it audio and get a `Transcript`.  Models load on first use.
"""

from limelight.voice.audio import Audio
from limelight.voice.backends import BACKENDS, TTSBackend, VoiceInfo, register_backend
from limelight.voice.codec import CONTENT_TYPES, FORMATS, decode, encode
from limelight.voice.errors import AudioDecodeError, VoiceError
from limelight.voice.markup import speakable
from limelight.voice.profile import DEFAULT_PROFILE, VoiceProfile
from limelight.voice.sentences import SentenceSplitter
from limelight.voice.speech import MAX_INPUT_CHARS, OPENAI_VOICES, Speech
from limelight.voice.transcriber import MAX_AUDIO_SECONDS, Segment, Transcriber, Transcript

__all__ = [
    "BACKENDS",
    "CONTENT_TYPES",
    "DEFAULT_PROFILE",
    "FORMATS",
    "MAX_AUDIO_SECONDS",
    "MAX_INPUT_CHARS",
    "OPENAI_VOICES",
    "Audio",
    "AudioDecodeError",
    "Segment",
    "SentenceSplitter",
    "Speech",
    "TTSBackend",
    "Transcriber",
    "Transcript",
    "VoiceError",
    "VoiceInfo",
    "VoiceProfile",
    "decode",
    "encode",
    "register_backend",
    "speakable",
]

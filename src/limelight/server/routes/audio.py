"""OpenAI's audio API: `/v1/audio/speech` (text to speech) and `/v1/audio/transcriptions`
(speech to text), so clients written for OpenAI talk to limelight's voices unchanged.

`voice` names a character (its own voice profile, by slug), one of this server's voices
(`GET /api/voices`) or one of OpenAI's voice names, each mapped to a distinct voice here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import select

from limelight.server.deps import CallerDep, Services, ServicesDep
from limelight.server.errors import APIError
from limelight.server.routes.voices import voice_worker
from limelight.server.schemas import openai as oa
from limelight.server.speech import character_voice
from limelight.store import Character
from limelight.voice import CONTENT_TYPES, Transcript, VoiceError, VoiceProfile, encode

router = APIRouter(prefix="/v1/audio", tags=["openai"])
SPEECH_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "limelight-tts")
TRANSCRIPTION_MODELS = (
    "whisper-1",
    "whisper-tiny.en",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
)
TranscriptFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]


@router.post("/speech")
async def create_speech(body: oa.SpeechRequest, svc: ServicesDep, _: CallerDep) -> Response:
    worker = voice_worker(svc)
    if body.model not in SPEECH_MODELS:
        message = _unknown("model", body.model, SPEECH_MODELS)
        raise APIError(404, message, "model", "model_not_found")
    profile = _voice(svc, body.voice)
    try:
        profile = replace(profile, rate=profile.rate * body.speed)
    except VoiceError as err:
        message = f"speed {body.speed} is out of range for this voice: {err}"
        raise APIError(400, message, "speed") from None
    audio = await worker.synthesize(body.input, profile)
    fmt = body.response_format
    return Response(encode(audio, fmt), media_type=CONTENT_TYPES[fmt])


@router.post("/transcriptions", response_model=None)
async def create_transcription(
    svc: ServicesDep,
    _: CallerDep,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form()],
    language: Annotated[str | None, Form()] = None,
    response_format: Annotated[TranscriptFormat, Form()] = "json",
    prompt: Annotated[str | None, Form()] = None,  # accepted; tiny.en takes no prompt here
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
) -> Response:
    worker = voice_worker(svc)
    if model not in TRANSCRIPTION_MODELS:
        raise APIError(
            404, _unknown("model", model, TRANSCRIPTION_MODELS), "model", "model_not_found"
        )
    if language not in (None, "en"):
        message = f"language {language!r}: this server's Whisper is English-only"
        raise APIError(400, message, "language")
    data = await file.read()
    if not data:
        raise APIError(400, "the uploaded file is empty", "file")
    transcript = await worker.transcribe(data, "en")
    return _transcript_response(transcript, response_format)


def _voice(svc: Services, name: str) -> VoiceProfile:
    """A character's voice if `name` is a character's slug, else a voice by name."""
    with svc.store.reader() as db:
        character = db.scalar(select(Character).where(Character.slug == name))
        if character is not None:
            return character_voice(character.card, voice_worker(svc))
    return voice_worker(svc).speech.resolve(name)  # a VoiceError lists the known voices


def _transcript_response(transcript: Transcript, fmt: TranscriptFormat) -> Response:
    text = transcript.text.strip()
    if fmt == "json":
        return JSONResponse({"text": text})
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt == "verbose_json":
        segments = [
            {"id": i, "start": s.start, "end": s.end, "text": s.text}
            for i, s in enumerate(transcript.segments)
        ]
        return JSONResponse(
            {
                "task": "transcribe",
                "language": "english",
                "duration": transcript.duration,
                "text": text,
                "segments": segments,
            }
        )
    return PlainTextResponse(_subtitles(transcript, fmt), media_type=f"text/{fmt}")


def _subtitles(transcript: Transcript, fmt: Literal["srt", "vtt"]) -> str:
    sep = "," if fmt == "srt" else "."
    blocks = ["WEBVTT\n"] if fmt == "vtt" else []
    for i, segment in enumerate(transcript.segments, 1):
        span = f"{_clock(segment.start, sep)} --> {_clock(segment.end, sep)}"
        number = f"{i}\n" if fmt == "srt" else ""
        blocks.append(f"{number}{span}\n{segment.text.strip()}\n")
    return "\n".join(blocks)


def _clock(seconds: float, sep: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02}:{minutes:02}:{secs:02}{sep}{millis:03}"


def _unknown(what: str, name: str, known: tuple[str, ...]) -> str:
    return f"unknown {what} {name!r}; this server has {', '.join(known)}"

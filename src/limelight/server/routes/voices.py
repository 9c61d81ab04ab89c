"""/api/voices: the voices this server can speak with, and a preview of a voice profile
(what the character editor plays before a voice is saved)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from limelight.server.deps import CallerDep, Services, ServicesDep
from limelight.server.errors import APIError
from limelight.server.schemas import api
from limelight.server.speech import STREAM_FORMAT, VoiceWorker
from limelight.voice import CONTENT_TYPES, VoiceProfile, encode

router = APIRouter(prefix="/api/voices", tags=["voices"])


@router.get("")
def list_voices(svc: ServicesDep, _: CallerDep) -> list[api.VoicePublic]:
    if svc.voice is None:  # voice is off: nothing to speak with
        return []
    voices = svc.voice.speech.voices()
    return [api.VoicePublic(backend=v.backend, voice=v.voice, label=v.label) for v in voices]


@router.post("/preview")
async def create_preview(body: api.VoicePreview, svc: ServicesDep, _: CallerDep) -> Response:
    worker = voice_worker(svc)
    profile = worker.check(VoiceProfile.from_dict(body.voice))  # a VoiceError names the fault
    audio = await worker.synthesize(body.text, profile)
    return Response(encode(audio, STREAM_FORMAT), media_type=CONTENT_TYPES[STREAM_FORMAT])


def voice_worker(svc: Services) -> VoiceWorker:
    if svc.voice is None:
        raise APIError(400, "voice is off on this server (LIMELIGHT_VOICE=false)")
    return svc.voice

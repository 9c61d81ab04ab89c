"""The assembled stack's speech service: text in, one WAV out, over HTTP.

`python -m bench.e2e_tts --port P` answers `POST /speak {"text"}` with the whole text
synthesised as one WAV (`audio/wav`), the way a stand-alone TTS server (Piper's own HTTP
server among them) does: synthesis first, then the response.  It speaks with the same
`limelight.voice.Speech` and `DEFAULT_PROFILE` as limelight's server, on the same number
of threads per synthesis, so the two stacks pay for the same voice; what differs is when
synthesis starts (after the whole reply here, per sentence in limelight) and the hop.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn
from fastapi import FastAPI, Response
from pydantic import BaseModel, Field

from limelight.server.settings import Settings
from limelight.voice import DEFAULT_PROFILE, MAX_INPUT_CHARS, Speech, encode

TTS_THREADS = int(Settings.model_fields["tts_threads"].default)  # as `limelight serve`


class SpeakRequest(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)


def create_app(num_threads: int = TTS_THREADS) -> FastAPI:
    app = FastAPI(title="e2e tts")
    speech = Speech(num_threads=num_threads)
    speech.synthesize("Hello.", DEFAULT_PROFILE)  # load the voice before answering /health

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "voice": DEFAULT_PROFILE.voice}

    @app.post("/speak")
    def speak(body: SpeakRequest) -> Response:  # a plain route: synthesis runs in a thread
        audio = speech.synthesize(body.text, DEFAULT_PROFILE)
        return Response(encode(audio, "wav"), media_type="audio/wav")

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bench/e2e.py's speech service")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=TTS_THREADS, help="per synthesis")
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.threads), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

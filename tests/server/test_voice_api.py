"""Voice over real HTTP: OpenAI's /v1/audio endpoints through the official client, replies
spoken sentence by sentence (`"speak": true`), spoken turns (`/voice`), voices on
characters and the voice preview, and every kind of bad input answered 4xx."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from limelight.voice import Transcriber, decode
from limelight.voice.analysis import word_error_rate
from tests.server.conftest import Server
from tests.server.test_sessions_api import new_session, sse

pytestmark = pytest.mark.slow
SENTENCE = "The library opens at nine in the morning on weekdays."


@pytest.fixture(scope="module")
def http(server_no_memory: Server) -> Iterator[httpx.Client]:
    with server_no_memory.client() as client:
        yield client


@pytest.fixture(scope="module")
def client(server_no_memory: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server_no_memory.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber()


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as w:
        return w.getnframes() / w.getframerate()


@pytest.mark.parametrize("fmt", ["mp3", "wav", "opus", "flac", "pcm"])
def test_speech_through_the_official_client(
    client: openai.OpenAI, transcriber: Transcriber, fmt: str
) -> None:
    response = client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input=SENTENCE,
        response_format=fmt,  # type: ignore[arg-type]
    )
    data = response.read()
    # pcm: raw 24 kHz 16-bit mono, as OpenAI sends it
    seconds = len(data) / 2 / 24_000 if fmt == "pcm" else decode(data).duration
    assert 1.5 < seconds < 8, seconds
    if fmt == "mp3":
        heard = transcriber.transcribe(data).text
        assert word_error_rate(SENTENCE, heard) <= 0.2, heard


def test_a_character_speaks_in_its_own_voice(http: httpx.Client) -> None:
    characters = http.get("/api/characters").json()
    voices = {c["slug"]: c["voice"] for c in characters}
    slow, fast = sorted(voices, key=lambda slug: voices[slug]["rate"])[:: len(voices) - 1]
    seconds = {}
    for slug in (slow, fast):
        body = {"model": "tts-1", "voice": slug, "input": SENTENCE, "response_format": "wav"}
        response = http.post("/v1/audio/speech", json=body)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "audio/wav"
        seconds[slug] = wav_seconds(response.content)
    assert seconds[slow] > seconds[fast] * 1.05, seconds


def test_transcription_round_trips_a_synthesised_sentence(
    http: httpx.Client, client: openai.OpenAI
) -> None:
    spoken = http.post(
        "/v1/audio/speech",
        json={
            "model": "tts-1",
            "voice": "en_US-joe-medium",
            "input": SENTENCE,
            "response_format": "wav",
        },
    ).content
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("sentence.wav", spoken, "audio/wav")
    ).text
    assert word_error_rate(SENTENCE, text) <= 0.1, text
    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=("s.wav", spoken, "audio/wav"), response_format="verbose_json"
    )
    assert verbose.duration == pytest.approx(wav_seconds(spoken), abs=0.1)
    srt = http.post(
        "/v1/audio/transcriptions",
        data={"model": "whisper-1", "response_format": "srt"},
        files={"file": ("s.wav", spoken, "audio/wav")},
    )
    assert srt.status_code == 200 and srt.text.startswith("1\n00:00:00,000 --> "), srt.text


def test_a_spoken_reply_streams_audio_per_sentence_before_done(http: httpx.Client) -> None:
    session = new_session(http, "lumi")
    body = {"content": "Tell me three short facts about the sea.", "speak": True, "max_tokens": 60}
    with http.stream(
        "POST", f"/api/sessions/{session['id']}/messages", params={"user": "alice"}, json=body
    ) as response:
        assert response.status_code == 200
        events = sse(response)
    names = [name for name, _ in events]
    assert names[-1] == "done" and "audio" in names, names
    audio = [data for name, data in events if name == "audio"]
    assert [a["index"] for a in audio] == list(range(len(audio)))
    content = events[-1][1]["message"]["content"]
    for part in audio:
        assert part["format"] == "wav" and wav_seconds(base64.b64decode(part["audio"])) > 0.2
        assert part["text"].split()[0].strip("*\"'") in content
    first_audio = names.index("audio")
    assert "delta" in names[:first_audio]


def test_a_reply_not_streamed_carries_its_audio(http: httpx.Client) -> None:
    session = new_session(http, "lumi")
    body = {"content": "Say hello.", "speak": True, "stream": False, "max_tokens": 24}
    response = http.post(
        f"/api/sessions/{session['id']}/messages", params={"user": "alice"}, json=body
    )
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["message"]["content"]
    assert reply["audio"] and base64.b64decode(reply["audio"][0]["audio"])[:4] == b"RIFF"


def test_a_spoken_turn_is_transcribed_then_answered(http: httpx.Client) -> None:
    question = "What is your favorite color?"  # tiny.en spells it the American way
    spoken = http.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": question, "response_format": "opus"},
    ).content
    session = new_session(http, "lumi")
    with http.stream(
        "POST",
        f"/api/sessions/{session['id']}/voice",
        params={"user": "alice"},
        data={"speak": "false", "max_tokens": "12"},
        files={"file": ("turn.ogg", spoken, "audio/ogg")},
    ) as response:
        assert response.status_code == 200
        events = sse(response)
    assert events[0][0] == "transcript"
    assert word_error_rate(question, events[0][1]["text"]) <= 0.2, events[0][1]
    assert events[-1][0] == "done" and "audio" not in [name for name, _ in events]
    assert events[-1][1]["usage"]["completion_tokens"] <= 12
    stored = http.get(f"/api/sessions/{session['id']}", params={"user": "alice"}).json()
    assert stored["messages"][-2]["content"] == events[0][1]["text"]


def test_voices_listed_previewed_and_saved_on_a_character(http: httpx.Client) -> None:
    voices = http.get("/api/voices").json()
    backends = {v["backend"] for v in voices}
    assert {"piper", "espeak"} <= backends
    profile = {"backend": "espeak", "voice": "en-gb", "rate": 1.2, "pitch": 0.9, "variability": 0.3}
    preview = http.post("/api/voices/preview", json={"text": "Testing, one two.", "voice": profile})
    assert preview.status_code == 200 and preview.content[:4] == b"RIFF"
    created = http.post("/api/characters", json={"name": "Voiced", "voice": profile})
    assert created.status_code == 201, created.text
    slug = created.json()["slug"]
    assert created.json()["voice"] == profile
    assert created.json()["card"]["data"]["extensions"]["limelight"]["voice"] == profile
    changed = http.patch(f"/api/characters/{slug}", json={"voice": {**profile, "rate": 0.8}})
    assert changed.status_code == 200 and changed.json()["voice"]["rate"] == 0.8
    exported = http.get(f"/api/characters/{slug}/export", params={"format": "json"}).json()
    assert exported["data"]["extensions"]["limelight"]["voice"]["rate"] == 0.8


def error(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    return str(response.json()["error"]["message"])


def test_bad_speech_requests_are_answered_4xx(http: httpx.Client) -> None:
    def speech(**fields: Any) -> httpx.Response:
        body = {"model": "tts-1", "voice": "alloy", "input": "Hello.", **fields}
        return http.post("/v1/audio/speech", json=body)

    assert "empty" in error(speech(input="   "))
    assert "4096" in error(speech(input="word " * 1000))
    assert "nobody" in error(speech(voice="nobody"))
    assert "model" in error(speech(model="tts-9"), 404)
    assert "response_format" in error(speech(response_format="aiff"))
    assert "speed" in error(speech(speed=9))
    bad = {"backend": "piper", "voice": "en_US-joe-medium", "pitch": 7}
    assert "pitch" in error(http.post("/api/voices/preview", json={"voice": bad}))
    assert "pitch" in error(http.post("/api/characters", json={"name": "X", "voice": bad}))
    missing = {"backend": "piper", "voice": "en_GB-nobody-medium"}
    assert "en_GB-nobody-medium" in error(
        http.post("/api/characters", json={"name": "X", "voice": missing})
    )
    assert "/api/voices" in error(http.post("/api/voices/preview", json={"voice": missing}))
    assert "X" not in {c["name"] for c in http.get("/api/characters").json()}


def test_bad_recordings_are_answered_4xx(http: httpx.Client) -> None:
    def transcribe(data: bytes, **fields: str) -> httpx.Response:
        form = {"model": "whisper-1", **fields}
        return http.post("/v1/audio/transcriptions", data=form, files={"file": ("a.wav", data)})

    assert "audio" in error(transcribe(b"this is not audio at all" * 50))
    assert "empty" in error(transcribe(b""))
    assert "model" in error(transcribe(b"RIFF", model="whisper-9"), 404)
    session = new_session(http, "lumi")
    before = http.get(f"/api/sessions/{session['id']}", params={"user": "alice"}).json()
    turn = http.post(
        f"/api/sessions/{session['id']}/voice",
        params={"user": "alice"},
        files={"file": ("turn.webm", b"\x1aE\xdf\xa3 broken")},
    )
    assert "audio" in error(turn)
    after = http.get(f"/api/sessions/{session['id']}", params={"user": "alice"}).json()
    assert after["messages"] == before["messages"]

"""Speaking to a character in the browser: Chromium's fake microphone plays a real
recording (synthesised by limelight's own voice), push-to-talk and call mode send it, the
server's transcript appears as the user's message and the reply streams in."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import httpx
import pytest

from tests.webapp.conftest import (
    OBSERVE_STREAM,
    OpenPage,
    artifacts,
    replies,
    session_id,
    wait_for_reply,
)

pytestmark = pytest.mark.slow
QUESTION = "What is your favourite colour?"


def padded(wav: bytes, before: float = 0.3, after: float = 1.5) -> tuple[bytes, float]:
    """The WAV with silence around it (the fake microphone plays it once), and its length."""
    with wave.open(io.BytesIO(wav)) as source:
        params, frames = source.getparams(), source.readframes(source.getnframes())
    quiet = bytes(params.sampwidth * params.nchannels)
    rate = params.framerate
    out = io.BytesIO()
    with wave.open(out, "wb") as target:
        target.setparams(params)
        target.writeframes(quiet * int(before * rate) + frames + quiet * int(after * rate))
    seconds = before + len(frames) / (params.sampwidth * params.nchannels * rate) + after
    return out.getvalue(), seconds


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    from limelight.voice import DEFAULT_PROFILE, Speech, encode

    wav = encode(Speech().synthesize(QUESTION, DEFAULT_PROFILE), "wav")
    data, seconds = padded(wav)
    path = tmp_path_factory.mktemp("mic") / "question.wav"
    path.write_bytes(data)
    return path, seconds


@pytest.fixture(scope="module")
def browser_args(recording: tuple[Path, float]) -> list[str]:
    # %noloop: the file plays once per microphone opening, then silence
    return [f"--use-file-for-fake-audio-capture={recording[0]}%noloop"]


def user_turns(http: httpx.Client, user: str, sid: str) -> list[str]:
    messages = http.get(f"/api/sessions/{sid}", params={"user": user}).json()["messages"]
    return [m["content"] for m in messages if m["role"] == "user"]


def test_push_to_talk(
    open_page: OpenPage, http: httpx.Client, recording: tuple[Path, float]
) -> None:
    user = "talker"
    page = open_page(user=user)
    page.evaluate("localStorage.setItem('limelight.speak', 'false')")
    page.click(".card[data-slug='lumi']")
    page.wait_for_selector("#chat:not([hidden]) .message")
    page.click("#new-session")
    page.evaluate(OBSERVE_STREAM)
    before = replies(page)
    page.hover("#mic")
    page.mouse.down()
    page.wait_for_selector("#mic.recording")
    page.wait_for_timeout(recording[1] * 1000 - 800)  # let go in the silence after it
    page.mouse.up()
    heard = page.locator(".message.user:not(.pending) .text").last
    heard.wait_for(timeout=120_000)
    wait_for_reply(page, before)
    said = heard.inner_text().lower()
    assert "favo" in said and "colo" in said, f"transcript shown: {said!r}"
    lengths = page.evaluate("[...window.__lengths]")
    assert len(lengths) >= 2, f"the spoken turn's reply did not stream: {lengths}"
    assert page.locator(".message.assistant").last.locator(".text").inner_text().strip()
    turns = user_turns(http, user, session_id(page))
    assert len(turns) == 1 and "colo" in turns[0].lower()
    page.screenshot(path=artifacts() / "push-to-talk.png")


def test_call_mode_listens_answers_and_listens_again(
    open_page: OpenPage, http: httpx.Client
) -> None:
    user = "caller"
    page = open_page(user=user)
    page.click(".card[data-slug='lumi']")
    page.wait_for_selector("#chat:not([hidden]) .message")
    page.click("#new-session")
    before = replies(page)
    page.click("#call")  # opens the microphone: the recording plays, then silence
    assert page.get_attribute("#call", "aria-pressed") == "true"
    page.wait_for_selector("#call-status:text-is('listening…')")
    wait_for_reply(page, before, timeout=180_000)
    # the answer is spoken to its end, then the call listens again
    page.wait_for_selector("#call-status:text-is('listening…')", timeout=120_000)
    turns = user_turns(http, user, session_id(page))
    assert len(turns) == 1 and "colo" in turns[0].lower(), turns
    assert any(p["cls"] == "speech" for p in page.evaluate("window.__playing")), "not spoken"
    page.click("#call")
    assert page.get_attribute("#call", "aria-pressed") == "false"
    assert page.locator("#call-status").is_hidden()

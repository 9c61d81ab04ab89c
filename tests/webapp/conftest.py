"""The web app in a real headless Chromium against a real server (tests/server's
`start_server`: uvicorn, a fresh SQLite file, the packaged SmolLM2 model).

One server for the package and one browser per test module; each test gets a fresh page
(its own browser context) acting as its own user, so tests never see each other's chats or
memories.
Chromium is Debian's (`apt-get install chromium`), driven by Playwright; no browser is
downloaded.  Screenshots go to $LIMELIGHT_TEST_ARTIFACTS/webapp (default test-artifacts/).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.server.conftest import SHARED_DATA, Server, start_server

CHROMIUM = Path(os.environ.get("LIMELIGHT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
CARDS = SHARED_DATA / "cards"
MAX_TOKENS = 40  # short replies keep the suite quick; the app reads it from localStorage

# Before any page script: short replies, the test's own user, and a record of every
# <audio> that started playing (media events do not bubble, but capture on document sees them).
INIT_SCRIPT = """
localStorage.setItem("limelight.maxTokens", "%d");
if (!localStorage.getItem("limelight.user")) localStorage.setItem("limelight.user", "%s");
window.__playing = [];
document.addEventListener("playing", (e) => window.__playing.push({
  id: e.target.id, cls: e.target.className, at: performance.now() }), true);
"""


# Counts the distinct lengths a streaming reply's text goes through, whether a speech player
# was attached to the reply while it was still streaming, and when the stream ended.
OBSERVE_STREAM = """() => {
  window.__lengths = new Set();
  window.__audioWhileStreaming = false;
  window.__streamEnd = null;
  new MutationObserver(() => {
    const live = document.querySelector(".message.streaming");
    if (!live) {
      const ending = window.__lengths.size && window.__streamEnd === null;
      if (ending) window.__streamEnd = performance.now();
      return;
    }
    const n = live.querySelector(".text").textContent.length;
    if (n) window.__lengths.add(n);
    if (live.querySelector("audio")) window.__audioWhileStreaming = true;
  }).observe(document.getElementById("messages"),
             { subtree: true, childList: true, characterData: true });
}"""


def artifacts() -> Path:
    folder = Path(os.environ.get("LIMELIGHT_TEST_ARTIFACTS", "test-artifacts")) / "webapp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for all of tests/webapp (starting one loads the model and the voices);
    each test acts as its own user."""
    running = start_server(tmp_path_factory.mktemp("webapp") / "limelight.db")
    yield running
    running.stop()


@pytest.fixture(scope="package")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def browser_args() -> list[str]:
    """Extra Chromium flags; a module overrides this (e.g. a fake microphone's file)."""
    return []


@pytest.fixture(scope="module")
def browser(browser_args: list[str]) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's with `apt-get install chromium` "
            "(or point LIMELIGHT_CHROMIUM at one); the web app tests drive a real browser"
        )
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + browser_args
        )
        yield launched
        launched.close()


OpenPage = Callable[..., Page]


@pytest.fixture
def open_page(
    browser: Browser, server: Server, request: pytest.FixtureRequest
) -> Iterator[OpenPage]:
    """open_page(user=..., viewport=...) -> the app loaded and ready, as that user.
    Fails the test on any uncaught script error in the page."""
    contexts = []
    errors: list[str] = []

    def open_(user: str | None = None, **context_options: object) -> Page:
        user = user or request.node.name.removeprefix("test_")[:40]
        context = browser.new_context(accept_downloads=True, **context_options)  # type: ignore[arg-type]
        contexts.append(context)
        context.add_init_script(INIT_SCRIPT % (MAX_TOKENS, user))
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(server.url)
        page.wait_for_selector("body[data-ready]")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def replies(page: Page) -> int:
    """How many reply streams the page has finished (the chat view counts them)."""
    return int(page.get_attribute("#chat", "data-replies") or 0)


def wait_for_reply(page: Page, before: int, timeout: float = 120_000) -> None:
    """Until the page has finished more reply streams than `before`."""
    page.wait_for_function(
        "n => Number(document.getElementById('chat').dataset.replies || 0) > n",
        arg=before,
        timeout=timeout,
    )


def send(page: Page, text: str) -> None:
    before = replies(page)
    page.fill("#input", text)
    page.click("#send")
    wait_for_reply(page, before)


def session_id(page: Page) -> str:
    value = page.get_attribute("#chat", "data-session")
    assert value, "no session on screen"
    return value


def wait_for_memory_jobs(http: httpx.Client, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while http.get("/api/stats").json()["memory_jobs_pending"]:
        assert time.monotonic() < deadline, "the server's memory jobs did not finish"
        time.sleep(0.3)


def has_voice_routes(http: httpx.Client) -> bool:
    return http.get("/api/voices").status_code == 200

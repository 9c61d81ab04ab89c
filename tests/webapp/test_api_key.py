"""The web app on a server that asks for API keys (one that others can reach): it asks for
the key, refuses a wrong one with the server's message, then chats and exports as the key's
user, keeps the key across visits, and asks again once the key is forgotten."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from limelight.server import auth
from limelight.store import Store
from tests.server.conftest import Server, start_server
from tests.webapp.conftest import OpenPage, artifacts, send

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("keys") / "limelight.db"
    store = Store(f"sqlite:///{path}")
    with store.session() as db:
        made = auth.create_key(db, "alice", name="browser")
    store.close()
    return path, made


@pytest.fixture(scope="module")
def server(key: tuple[Path, str]) -> Iterator[Server]:
    """This module's own server: keys would lock the other web app tests out of theirs."""
    running = start_server(key[0], memory=False, voice=False)
    yield running
    running.stop()


def test_the_app_asks_for_the_key_and_acts_as_its_user(
    open_page: OpenPage, key: tuple[Path, str]
) -> None:
    page = open_page(user="mallory")
    page.wait_for_selector("#key-dialog[open]")
    assert page.inner_text("#key-error") == "This server asks for an API key."
    assert page.locator(".card").count() == 0  # nothing shown without a key

    page.fill("#api-key", "ll-not-a-real-key")
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#key-dialog[open]")
    assert page.inner_text("#key-error") == "The server refused this key."
    assert page.locator(".banner").count() == 0  # the dialog says it, once
    page.screenshot(path=artifacts() / "api-key-refused.png")

    page.fill("#api-key", key[1])
    page.click("#key-form button[type=submit]")
    page.wait_for_selector(".card[data-slug='lumi']")
    assert not page.is_visible("#key-dialog")
    assert page.input_value("#user") == "alice" and page.is_disabled("#user")

    page.click(".card[data-slug='lumi']")
    page.wait_for_selector("#chat:not([hidden]) .message")
    send(page, "Hello! Where are we?")
    reply = page.locator(".message.assistant .text").last.inner_text()
    assert reply.strip()
    page.screenshot(path=artifacts() / "api-key-chat.png")

    page.click("#chat-menu summary")
    with page.expect_download() as event:
        page.click("#export-links .export-png")
    saved = Path(event.value.path())
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert event.value.suggested_filename == "lumi.png"

    page.reload()  # the key is kept in this browser
    page.wait_for_selector("body[data-ready] .card[data-slug='lumi']")
    assert not page.is_visible("#key-dialog")

    page.click("#key-button")
    page.click("#forget-key")
    page.wait_for_selector("#key-dialog[open]")  # refused again: the dialog is back
    assert page.inner_text("#key-error") == "This server asks for an API key."
    assert page.evaluate("localStorage.getItem('limelight.apiKey')") is None

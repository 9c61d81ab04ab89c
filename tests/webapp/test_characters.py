"""Characters in the browser: the phone-sized layout, the character form with its voice
(preview plays, the saved voice comes back from the API), export downloads, and a broken
card's import shown as an error that leaves the gallery as it was."""

from __future__ import annotations

import json

import httpx
import pytest
from playwright.sync_api import Page

from tests.webapp.conftest import CARDS, OpenPage, artifacts, has_voice_routes, send

pytestmark = pytest.mark.slow

NO_SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth"


def in_viewport(page: Page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    assert box is not None and size is not None, f"{selector} is not displayed"
    return (
        box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= size["width"]
        and box["y"] + box["height"] <= size["height"]
    )


def test_phone_sized_screen(open_page: OpenPage) -> None:
    page = open_page(viewport={"width": 360, "height": 740}, has_touch=True)
    page.evaluate("localStorage.setItem('limelight.speak', 'false')")
    assert page.locator(".card").count() >= 2
    assert page.evaluate(NO_SIDEWAYS_SCROLL) <= 360
    first, second = page.locator(".card").nth(0), page.locator(".card").nth(1)
    assert (first.bounding_box() or {})["width"] <= 180  # two cards a row, not squeezed off
    page.screenshot(path=artifacts() / "phone-gallery.png", full_page=True)

    page.click(".card[data-slug='lumi']")
    page.wait_for_selector("#chat:not([hidden]) .message")
    page.click("#new-session")
    send(page, "Hi! Please answer with a long, detailed paragraph about lighthouses.")
    send(page, "Thanks!")
    assert page.evaluate(NO_SIDEWAYS_SCROLL) <= 360
    assert in_viewport(page, "#input") and in_viewport(page, "#send") and in_viewport(page, "#mic")
    for button in ("#new-session", "#show-memories", "#speaker", "#call", "#chat-menu"):
        box = page.locator(button).bounding_box()  # reachable: on the page, not off its side
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, button
    page.screenshot(path=artifacts() / "phone-chat.png")

    page.click("#show-memories")
    assert in_viewport(page, "#memories .close")
    assert page.evaluate(NO_SIDEWAYS_SCROLL) <= 360
    page.click("#memories .close")
    assert second.is_hidden()  # the gallery is not on screen behind the chat


def set_range(page: Page, selector: str, value: float) -> None:
    page.eval_on_selector(
        selector,
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
        value,
    )


def test_create_character_with_voice_preview_and_export(
    open_page: OpenPage, http: httpx.Client
) -> None:
    assert has_voice_routes(http), "the server has no /api/voices yet"
    voices = http.get("/api/voices").json()
    voice = voices[-1]
    page = open_page()
    page.click(".card.new-character")
    page.wait_for_selector("#editor:not([hidden])")
    page.fill("[name=name]", "Wren Holloway")
    page.fill("[name=description]", "{{char}} is a ferry pilot on a foggy northern lake.")
    page.fill("[name=personality]", "Dry, patient, fond of weather.")
    page.fill("[name=scenario]", "{{user}} boards the last ferry of the day.")
    page.fill("[name=first_mes]", "Mind the gap, the lake is restless tonight.")
    page.fill("[name=mes_example]", "<START>\n{{user}}: Is it safe?\n{{char}}: Safe as fog.")
    page.fill("[name=tags]", "ferry, lake , original")
    page.select_option("#voice-choice", f"{voice['backend']}/{voice['voice']}")
    set_range(page, "#voice-rate", 1.3)
    set_range(page, "#voice-pitch", 0.8)
    set_range(page, "#voice-variability", 0.25)
    assert page.inner_text("#voice-rate-value") == "1.30"

    with page.expect_response("**/api/voices/preview**") as previewed:
        page.click("#preview-voice")
    response = previewed.value
    assert response.status == 200 and response.headers["content-type"].startswith("audio/wav")
    page.wait_for_function("() => document.getElementById('voice-preview').currentTime > 0")

    page.click("#character-form button[type=submit]")
    page.wait_for_selector("#chat:not([hidden]) #chat-name:text-is('Wren Holloway')")
    listed = {c["name"]: c for c in http.get("/api/characters").json()}
    saved = listed["Wren Holloway"]
    assert saved["tags"] == ["ferry", "lake", "original"]
    assert saved["voice"] == {
        "backend": voice["backend"],
        "voice": voice["voice"],
        "rate": 1.3,
        "pitch": 0.8,
        "variability": 0.25,
    }
    card = http.get(f"/api/characters/{saved['slug']}").json()["card"]["data"]
    assert card["personality"] == "Dry, patient, fond of weather."
    assert card["first_mes"] == "Mind the gap, the lake is restless tonight."
    assert "Safe as fog." in card["mes_example"]
    assert page.locator(".message.assistant .text").first.inner_text().startswith("Mind the gap")

    page.click("#chat-menu summary")  # edit it again: the form shows what was saved
    page.click("#edit-character")
    page.wait_for_selector("#editor:not([hidden])")
    assert page.input_value("[name=scenario]") == "{{user}} boards the last ferry of the day."
    assert page.input_value("#voice-rate") == "1.3"
    page.fill("[name=description]", "{{char}} pilots the ferry and mends its nets.")
    set_range(page, "#voice-pitch", 1.5)
    page.click("#character-form button[type=submit]")
    page.wait_for_selector("#chat:not([hidden]) #chat-name:text-is('Wren Holloway')")
    again = http.get(f"/api/characters/{saved['slug']}").json()
    assert again["card"]["data"]["description"] == "{{char}} pilots the ferry and mends its nets."
    assert again["voice"]["pitch"] == 1.5 and again["voice"]["rate"] == 1.3

    for fmt in ("json", "png"):
        page.click("#chat-menu summary")
        with page.expect_download() as downloading:
            page.click(f"#export-links .export-{fmt}")
        download = downloading.value
        assert download.suggested_filename == f"{saved['slug']}.{fmt}"
        data = download.path().read_bytes()
        if fmt == "json":
            exported = json.loads(data)
            assert exported["data"]["name"] == "Wren Holloway"
            assert exported["data"]["extensions"]["limelight"]["voice"]["pitch"] == 1.5
        else:
            assert data.startswith(b"\x89PNG")


def test_broken_card_shows_the_servers_error(open_page: OpenPage, http: httpx.Client) -> None:
    page = open_page()
    page.wait_for_selector(".card[data-slug='lumi']")
    slugs = "[...document.querySelectorAll('.card[data-slug]')].map((c) => c.dataset.slug)"
    before = page.evaluate(slugs)
    page.set_input_files("#import-file", str(CARDS / "choral_invalid-character.png"))  # picker
    banner = page.locator(".banner.error")
    banner.wait_for()
    broken = CARDS / "choral_invalid-character.png"
    answer = http.post("/api/characters/import", files={"file": (broken.name, broken.read_bytes())})
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert message in banner.inner_text()
    assert "choral_invalid-character.png" in banner.inner_text()
    assert page.evaluate(slugs) == before
    assert page.locator("#gallery").is_visible()
    page.screenshot(path=artifacts() / "import-error.png")
    banner.locator(".dismiss").click()
    assert banner.count() == 0

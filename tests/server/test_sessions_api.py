"""/api/sessions over real HTTP: greetings and their swipes, replies streamed (SSE) and not,
regenerate, swipe, edit, delete and branch, and sessions private to their user."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server.conftest import Server

pytestmark = pytest.mark.slow
FAST = {"max_tokens": 8, "temperature": 0}


@pytest.fixture(scope="module")
def http(server_no_memory: Server) -> Iterator[httpx.Client]:
    with server_no_memory.client() as client:
        yield client


@pytest.fixture(scope="module")
def character(http: httpx.Client) -> dict[str, Any]:
    """A built-in character with alternate greetings (its card as the API returns it)."""
    for summary in http.get("/api/characters").json():
        card = http.get(f"/api/characters/{summary['slug']}").json()
        if len(card["card"]["data"]["alternate_greetings"]) >= 2:
            return dict(card)
    raise AssertionError("no built-in character has two alternate greetings")


def new_session(http: httpx.Client, slug: str, user: str = "alice") -> dict[str, Any]:
    response = http.post("/api/sessions", json={"character": slug, "user": user})
    assert response.status_code == 201, response.text
    return dict(response.json())


def read(http: httpx.Client, session: dict[str, Any], user: str = "alice") -> dict[str, Any]:
    response = http.get(f"/api/sessions/{session['id']}", params={"user": user})
    assert response.status_code == 200, response.text
    return dict(response.json())


def send(http: httpx.Client, session_id: str, content: str, user: str = "alice") -> dict[str, Any]:
    response = http.post(
        f"/api/sessions/{session_id}/messages",
        params={"user": user},
        json={"content": content, "stream": False, **FAST},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def sse(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a text/event-stream."""
    assert response.headers["content-type"].startswith("text/event-stream")
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data += line.removeprefix("data: ")
        elif not line and data:
            events.append((name, json.loads(data)))
            name, data = "message", ""
    return events


def test_a_session_opens_with_the_greeting_and_its_swipes(
    http: httpx.Client, character: dict[str, Any]
) -> None:
    session = new_session(http, character["slug"])
    assert session["character"] == character["slug"] and session["user"] == "alice"
    (greeting,) = session["messages"]
    num_greetings = 1 + len(character["card"]["data"]["alternate_greetings"])
    assert greeting["role"] == "assistant" and greeting["parent_id"] is None
    assert (greeting["swipe_index"], greeting["swipe_count"]) == (0, num_greetings)
    assert greeting["content"] and "{{" not in greeting["content"]

    url = f"/api/sessions/{session['id']}/messages/{greeting['id']}/swipe"
    second = http.post(url, params={"user": "alice"}, json={"step": 1}).json()["messages"]
    assert len(second) == 1 and second[0]["swipe_index"] == 1
    assert second[0]["content"] != greeting["content"]
    url = f"/api/sessions/{session['id']}/messages/{second[0]['id']}/swipe"
    back = http.post(url, params={"user": "alice"}, json={"step": -1}).json()["messages"]
    assert back[0]["id"] == greeting["id"]
    url = f"/api/sessions/{session['id']}/messages/{greeting['id']}/swipe"
    last = http.post(url, params={"user": "alice"}, json={"step": -1}).json()["messages"]
    assert last[0]["swipe_index"] == num_greetings - 1  # wraps around
    assert read(http, session)["messages"][0]["id"] == last[0]["id"]  # it stays shown


def test_a_reply_not_streamed(http: httpx.Client, character: dict[str, Any]) -> None:
    session = new_session(http, character["slug"])
    done = send(http, session["id"], "Hello! Who are you?")
    reply = done["message"]
    assert reply["role"] == "assistant" and reply["content"]
    assert done["finish_reason"] in ("stop", "length")
    usage = done["usage"]
    assert usage["prompt_tokens"] > 50 and 0 < usage["completion_tokens"] <= 8
    messages = read(http, session)["messages"]
    assert [m["role"] for m in messages] == ["assistant", "user", "assistant"]
    greeting, user, stored = messages
    assert user["content"] == "Hello! Who are you?" and user["parent_id"] == greeting["id"]
    assert stored["id"] == reply["id"] and stored["parent_id"] == user["id"] == reply["parent_id"]
    assert stored["content"] == reply["content"]
    assert stored["prompt_tokens"] == usage["prompt_tokens"]
    assert stored["completion_tokens"] == usage["completion_tokens"]


def test_a_reply_streamed_as_server_sent_events(
    http: httpx.Client, character: dict[str, Any]
) -> None:
    session = new_session(http, character["slug"])
    body = {"content": "Tell me about yourself.", "max_tokens": 12, "temperature": 0}
    url = f"/api/sessions/{session['id']}/messages"
    with http.stream("POST", url, params={"user": "alice"}, json=body) as response:
        assert response.status_code == 200
        events = sse(response)
    names = [name for name, _ in events]
    assert names[-1] == "done" and names.count("done") == 1
    assert set(names[:-1]) == {"delta"} and len(names) > 2
    text = "".join(data["text"] for name, data in events if name == "delta")
    done = events[-1][1]
    assert done["message"]["content"] == text.strip() != ""
    assert 0 < done["usage"]["completion_tokens"] <= 12
    assert read(http, session)["messages"][-1]["id"] == done["message"]["id"]


def test_regenerate_adds_a_sibling_and_swipe_moves_between_them(
    http: httpx.Client, character: dict[str, Any]
) -> None:
    session = new_session(http, character["slug"])
    first = send(http, session["id"], "What is your favourite colour?")
    url = f"/api/sessions/{session['id']}/messages/{first['message']['id']}/regenerate"
    response = http.post(url, params={"user": "alice"}, json={"stream": False, **FAST})
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["message"]["id"] != first["message"]["id"]
    assert second["message"]["parent_id"] == first["message"]["parent_id"]
    assert second["usage"]["prompt_tokens"] == first["usage"]["prompt_tokens"]  # same prompt
    assert second["message"]["content"] == first["message"]["content"]  # greedy
    shown = read(http, session)["messages"]
    assert shown[-1]["id"] == second["message"]["id"]
    assert (shown[-1]["swipe_index"], shown[-1]["swipe_count"]) == (1, 2)
    assert len(shown) == 3  # a swipe, not another turn

    swipe = f"/api/sessions/{session['id']}/messages/{second['message']['id']}/swipe"
    back = http.post(swipe, params={"user": "alice"}, json={"step": -1}).json()["messages"]
    assert back[-1]["id"] == first["message"]["id"] and back[-1]["swipe_index"] == 0
    forward = http.post(swipe, params={"user": "alice"}, json={}).json()["messages"]
    assert forward[-1]["id"] == first["message"]["id"]  # step 1 from the second wraps to 0

    # Regenerating from the user message (streamed) gives a third swipe.
    user_id = first["message"]["parent_id"]
    url = f"/api/sessions/{session['id']}/messages/{user_id}/regenerate"
    with http.stream("POST", url, params={"user": "alice"}, json=FAST) as streamed:
        events = sse(streamed)
    assert events[-1][0] == "done" and events[-1][1]["message"]["parent_id"] == user_id
    assert read(http, session)["messages"][-1]["swipe_count"] == 3


def test_the_conversation_continues_on_the_branch_shown(
    http: httpx.Client, character: dict[str, Any]
) -> None:
    session = new_session(http, character["slug"])
    opening = send(http, session["id"], "Hi.")
    reply = send(http, session["id"], "How are you?")
    messages = read(http, session)["messages"]
    assert [m["content"] for m in messages[1::2]] == ["Hi.", "How are you?"]
    assert [m["id"] for m in messages[2::2]] == [opening["message"]["id"], reply["message"]["id"]]
    assert reply["usage"]["prompt_tokens"] > opening["usage"]["prompt_tokens"]  # history


def test_edit_delete_and_branch(http: httpx.Client, character: dict[str, Any]) -> None:
    session = new_session(http, character["slug"])
    sid = session["id"]
    first = send(http, sid, "One.")["message"]
    second = send(http, sid, "Two.")["message"]
    user_two = second["parent_id"]

    edited = http.patch(
        f"/api/sessions/{sid}/messages/{user_two}", params={"user": "alice"}, json={"content": "2!"}
    )
    assert edited.status_code == 200
    assert [m["content"] for m in edited.json()["messages"]][3] == "2!"
    blank = http.patch(
        f"/api/sessions/{sid}/messages/{user_two}", params={"user": "alice"}, json={"content": " "}
    )
    assert blank.status_code == 400 and "empty" in blank.json()["error"]["message"]

    branched = http.post(
        f"/api/sessions/{sid}/messages/{first['id']}/branch", params={"user": "alice"}
    )
    assert branched.status_code == 201
    copy = branched.json()
    assert copy["id"] != sid and copy["character"] == character["slug"]
    assert [m["content"] for m in copy["messages"]] == [
        m["content"] for m in read(http, session)["messages"][:3]
    ]
    assert not {m["id"] for m in copy["messages"]} & {
        m["id"] for m in read(http, session)["messages"]
    }
    ids = {s["id"] for s in http.get("/api/sessions", params={"user": "alice"}).json()}
    assert {sid, copy["id"]} <= ids

    deleted = http.delete(f"/api/sessions/{sid}/messages/{user_two}", params={"user": "alice"})
    assert deleted.status_code == 200
    assert [m["id"] for m in deleted.json()["messages"]][-1] == first["id"]  # the leaf moved up
    assert read(http, session)["messages"][-1]["id"] == first["id"]
    assert len(read(http, copy)["messages"]) == 3  # the branch is its own session

    assert http.delete(f"/api/sessions/{sid}", params={"user": "alice"}).status_code == 204
    assert http.get(f"/api/sessions/{sid}", params={"user": "alice"}).status_code == 404
    assert read(http, copy)["messages"][-1]["content"] == first["content"]


def test_another_user_cannot_see_or_touch_a_session(
    http: httpx.Client, character: dict[str, Any]
) -> None:
    session = new_session(http, character["slug"], user="alice")
    sid, greeting = session["id"], session["messages"][0]["id"]
    bob = {"user": "bob"}
    attempts = [
        http.get(f"/api/sessions/{sid}", params=bob),
        http.delete(f"/api/sessions/{sid}", params=bob),
        http.post(f"/api/sessions/{sid}/messages", params=bob, json={"content": "hi", **FAST}),
        http.post(f"/api/sessions/{sid}/messages/{greeting}/swipe", params=bob, json={}),
        http.patch(f"/api/sessions/{sid}/messages/{greeting}", params=bob, json={"content": "x"}),
        http.delete(f"/api/sessions/{sid}/messages/{greeting}", params=bob),
        http.post(f"/api/sessions/{sid}/messages/{greeting}/branch", params=bob),
        http.post(f"/api/sessions/{sid}/messages/{greeting}/regenerate", params=bob, json=FAST),
    ]
    for response in attempts:
        assert response.status_code == 404, (response.request.url, response.text)
        assert response.json()["error"]["type"] == "not_found_error"
    assert sid not in {s["id"] for s in http.get("/api/sessions", params=bob).json()}
    assert read(http, session) == session  # untouched


def test_sessions_list_per_user_and_character(
    http: httpx.Client, character: dict[str, Any]
) -> None:
    mine = new_session(http, character["slug"], user="carol")
    listed = http.get("/api/sessions", params={"user": "carol"}).json()
    assert [s["id"] for s in listed] == [mine["id"]] and listed[0]["messages"] == []
    other = http.get("/api/sessions", params={"user": "carol", "character": "nobody"}).json()
    assert other == []


def test_unknown_character_or_session_is_not_found(http: httpx.Client) -> None:
    response = http.post("/api/sessions", json={"character": "no-such-one"})
    assert response.status_code == 404 and "no-such-one" in response.json()["error"]["message"]
    missing = http.post("/api/sessions/0123/messages", json={"content": "hi", **FAST})
    assert missing.status_code == 404 and "0123" in missing.json()["error"]["message"]


def test_regenerating_a_greeting_is_a_bad_request(
    http: httpx.Client, character: dict[str, Any]
) -> None:
    session = new_session(http, character["slug"])
    greeting = session["messages"][0]["id"]
    url = f"/api/sessions/{session['id']}/messages/{greeting}/regenerate"
    response = http.post(url, params={"user": "alice"}, json=FAST)
    assert "swiped, not regenerated" in response.json()["error"]["message"]
    assert response.status_code == 400


def test_regenerate_without_a_greeting_sees_the_same_prompt(http: httpx.Client) -> None:
    slug = http.post("/api/characters", json={"name": "Silent Type"}).json()["slug"]
    session = new_session(http, slug)
    assert session["messages"] == []
    first = send(http, session["id"], "Hello?")
    url = f"/api/sessions/{session['id']}/messages/{first['message']['id']}/regenerate"
    second = http.post(url, params={"user": "alice"}, json={"stream": False, **FAST}).json()
    assert second["message"]["parent_id"] == first["message"]["parent_id"]
    assert second["usage"]["prompt_tokens"] == first["usage"]["prompt_tokens"]


def wait_until_idle(http: httpx.Client, lookups_before: int, timeout: float = 120) -> None:
    """Until the engine has taken a new prompt and stopped stepping for half a second."""
    deadline, last_steps = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        stats = http.get("/api/stats").json()
        if stats["prompt_tokens_looked_up"] > lookups_before and stats["steps"] == last_steps:
            return
        last_steps = stats["steps"]
        time.sleep(0.5)
    raise AssertionError("the engine did not settle")


def test_a_new_sessions_opening_is_computed_before_its_first_message(
    http: httpx.Client,
) -> None:
    """Creating a session computes its opening (character, profile, greeting) in the
    background, so the first message to a character nobody has used finds it cached."""
    lines = (f"Ilse keeps lighthouse number {i} on the rock called {i * 7}." for i in range(40))
    card = {"name": "Ilse Brandt", "description": " ".join(lines), "first_mes": "Welcome!"}
    created = http.post("/api/characters", json=card)
    assert created.status_code == 201, created.text
    before = http.get("/api/stats").json()["prompt_tokens_looked_up"]
    session = new_session(http, created.json()["slug"])
    wait_until_idle(http, before)
    path = f"/api/sessions/{session['id']}/messages?user=alice"
    usage = http.post(path, json={"content": "Hello!", "stream": False, **FAST}).json()["usage"]
    # all but the message and the template's last tokens (within a block) were cached
    assert usage["prompt_tokens"] > 600 and usage["cached_tokens"] >= usage["prompt_tokens"] - 32


def test_without_keys_the_caller_names_its_user(http: httpx.Client) -> None:
    assert http.get("/api/me").json() == {"user": "local", "keys_required": False}
    assert http.get("/api/me", params={"user": "maya"}).json()["user"] == "maya"

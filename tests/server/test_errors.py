"""Malformed requests over real HTTP: each one gets a 4xx with OpenAI's error body
(`{"error": {"message", "type", "param", "code"}}`), never a traceback, and leaves the
store as it was."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server.conftest import Server, start_server

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m-instruct"
MAX_BODY = 4096
MAX_UPLOAD = 64 * 1024
TABLES = ("characters", "sessions", "messages", "users", "api_keys")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(
        tmp_path_factory.mktemp("errors") / "limelight.db",
        memory=False,
        max_body_bytes=MAX_BODY,
        max_upload_bytes=MAX_UPLOAD,
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def existing(http: httpx.Client) -> dict[str, Any]:
    """A session with one exchange, made before any bad request."""
    slug = http.get("/api/characters").json()[0]["slug"]
    session = http.post("/api/sessions", json={"character": slug}).json()
    body = {"content": "Hello.", "stream": False, "max_tokens": 4, "temperature": 0}
    assert http.post(f"/api/sessions/{session['id']}/messages", json=body).status_code == 200
    return dict(http.get(f"/api/sessions/{session['id']}").json())


def counts(server: Server) -> dict[str, int]:
    assert server.settings.database_url is not None
    path = server.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


@pytest.fixture(autouse=True)
def store_intact(
    request: pytest.FixtureRequest, server: Server, http: httpx.Client, existing: dict[str, Any]
) -> Iterator[None]:
    """Every test here only sends bad requests: the store must not change."""
    if "giant" in request.fixturenames:  # see test_a_refused_reply_stores_nothing
        yield
        return
    before = counts(server)
    yield
    assert counts(server) == before
    assert http.get(f"/api/sessions/{existing['id']}").json() == existing


def refused(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """Assert an OpenAI-style error body with `status` and `words` in its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and isinstance(error["type"], str)
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    for word in words:
        assert word in error["message"], error["message"]
    return error


def chat(http: httpx.Client, **fields: Any) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    return http.post("/v1/chat/completions", json=body | fields)


def test_a_body_that_is_not_json(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions",
        content=b'{"model": "x", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert refused(response, 400, "not valid JSON")["code"] == "invalid_json"
    refused(
        http.post("/api/sessions", content=b"[]", headers={"content-type": "application/json"}),
        400,
    )


def test_an_unknown_model(http: httpx.Client) -> None:
    error = refused(chat(http, model="gpt-4o"), 404, "gpt-4o", "/v1/models")
    assert error["param"] == "model" and error["code"] == "model_not_found"
    body = {"model": "nope", "prompt": "Hi", "max_tokens": 2}
    refused(http.post("/v1/completions", json=body), 404, "nope")


def test_an_unknown_character_model(http: httpx.Client) -> None:
    refused(chat(http, model="character/nobody-here"), 404, "nobody-here")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 7}, "temperature"),
        ({"messages": "Hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "Hi"}]}, "messages.0.role"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"n": 2}, "n"),
        ({"model": None}, "model"),
    ],
)
def test_fields_of_the_wrong_type_or_range(
    http: httpx.Client, fields: dict[str, Any], param: str
) -> None:
    error = refused(chat(http, **fields), 400, param)
    assert error["param"] == param


def test_a_missing_field(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json={"model": MODEL})
    assert refused(response, 400, "messages", "required")["param"] == "messages"


def test_a_body_over_the_limit(http: httpx.Client) -> None:
    text = "x" * (MAX_BODY + 100)
    error = refused(chat(http, messages=[{"role": "user", "content": text}]), 413, str(MAX_BODY))
    assert error["code"] == "request_too_large"


def test_a_streamed_body_over_the_limit(http: httpx.Client) -> None:
    """No content-length: the limit is counted as the chunks arrive."""

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", "content": "'
        for _ in range(8):
            yield b"x" * 1024
        yield b'"}]}'

    response = http.post(
        "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert refused(response, 413, str(MAX_BODY))["code"] == "request_too_large"


def test_an_upload_has_its_own_larger_limit(http: httpx.Client) -> None:
    small = http.post("/api/characters/import", files={"file": ("a.json", b"x" * (MAX_BODY * 2))})
    refused(small, 400, "unknown format")  # past the JSON limit, within the upload limit
    big = http.post("/api/characters/import", files={"file": ("a.png", b"x" * (MAX_UPLOAD + 1))})
    refused(big, 413, str(MAX_UPLOAD))

    def streamed() -> Iterator[bytes]:  # multipart without a content-length
        yield (
            b'--b0undary\r\nContent-Disposition: form-data; name="file"; '
            b'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
        )
        for _ in range(MAX_UPLOAD // 1024 + 1):
            yield b"x" * 1024
        yield b"\r\n--b0undary--\r\n"

    headers = {"content-type": "multipart/form-data; boundary=b0undary"}
    chunked = http.post("/api/characters/import", content=streamed(), headers=headers)
    assert refused(chunked, 413, str(MAX_UPLOAD))["code"] == "request_too_large"


def test_an_empty_or_missing_upload(http: httpx.Client) -> None:
    empty = http.post("/api/characters/import", files={"file": ("card.png", b"")})
    assert refused(empty, 400, "empty")["param"] == "file"
    missing = http.post("/api/characters/import", files={"other": ("card.png", b"x")})
    refused(missing, 400, "file")
    not_multipart = http.post("/api/characters/import", json={"file": "card.png"})
    refused(not_multipart, 400, "file")


def test_unknown_character_or_session(http: httpx.Client, existing: dict[str, Any]) -> None:
    refused(http.get("/api/characters/nobody-here"), 404, "nobody-here")
    refused(http.get("/api/characters/nobody-here/export"), 404, "nobody-here")
    refused(http.patch("/api/characters/nobody-here", json={"name": "X"}), 404, "nobody-here")
    refused(http.delete("/api/characters/nobody-here"), 404, "nobody-here")
    refused(http.post("/api/sessions", json={"character": "nobody-here"}), 404, "nobody-here")
    refused(http.get("/api/sessions/feedface"), 404, "feedface")
    refused(http.delete("/api/sessions/feedface"), 404, "feedface")
    body = {"content": "Hi", "stream": False, "max_tokens": 2}
    refused(http.post("/api/sessions/feedface/messages", json=body), 404, "feedface")
    url = f"/api/sessions/{existing['id']}/messages/feedface"
    refused(http.patch(url, json={"content": "x"}), 404, "feedface")
    refused(http.post(f"{url}/swipe", json={}), 404, "feedface")
    refused(http.post(f"{url}/regenerate", json={"max_tokens": 2}), 404, "feedface")
    refused(http.post(f"{url}/branch"), 404, "feedface")


def test_bad_product_api_bodies(http: httpx.Client, existing: dict[str, Any]) -> None:
    sid, slug = existing["id"], existing["character"]
    refused(http.post(f"/api/sessions/{sid}/messages", json={"content": "   "}), 400, "empty")
    refused(http.post(f"/api/sessions/{sid}/messages", json={"content": ""}), 400, "content")
    refused(
        http.post(f"/api/sessions/{sid}/messages", json={"content": "Hi", "max_tokens": 0}),
        400,
        "max_tokens",
    )
    refused(http.post("/api/sessions", json={"character": slug, "colour": "red"}), 400, "colour")
    refused(http.post("/api/characters", json={"description": "no name"}), 400, "name")
    refused(http.get(f"/api/characters/{slug}/export", params={"format": "gif"}), 400, "format")
    swipe = f"/api/sessions/{sid}/messages/{existing['messages'][0]['id']}/swipe"
    refused(http.post(swipe, json={"step": "left"}), 400, "step")


def test_unknown_routes_and_methods(http: httpx.Client) -> None:
    refused(http.get("/v1/nothing-here"), 404)
    response = http.delete("/v1/models")
    assert response.status_code == 405 and response.json()["error"]["message"]


@pytest.fixture(scope="module")
def giant(http: httpx.Client) -> dict[str, Any]:
    """A session on a character whose definition alone outgrows the model's context."""
    card = {"name": "Giant", "description": "lorem ipsum " * 3000, "first_mes": "Hi."}
    data = json.dumps(card).encode()
    imported = http.post("/api/characters/import", files={"file": ("giant.json", data)})
    assert imported.status_code == 201, imported.text  # within the upload limit
    session = http.post("/api/sessions", json={"character": imported.json()["slug"]})
    return dict(session.json())


def test_a_character_too_long_for_the_context(http: httpx.Client, giant: dict[str, Any]) -> None:
    body = {"content": "Hello?", "stream": False, "max_tokens": 4}
    response = http.post(f"/api/sessions/{giant['id']}/messages", json=body)
    refused(response, 400, "character definition alone is", "max_tokens")
    with http.stream("POST", f"/api/sessions/{giant['id']}/messages", json=body) as streamed:
        streamed.read()
        refused(streamed, 400, "character definition alone is")  # not a stream


def test_a_character_too_long_for_the_context_over_the_openai_api(
    http: httpx.Client, giant: dict[str, Any]
) -> None:
    response = chat(http, model=f"character/{giant['character']}")
    refused(response, 400, "character definition alone is")


def test_a_conversation_not_ending_with_the_user(
    http: httpx.Client, existing: dict[str, Any]
) -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    response = chat(http, model=f"character/{existing['character']}", messages=messages)
    refused(response, 400, "the last message must be the user's")


def test_a_refused_reply_stores_nothing(
    server: Server, http: httpx.Client, giant: dict[str, Any]
) -> None:
    before = counts(server)
    body = {"content": "Hello?", "stream": False, "max_tokens": 4}
    assert http.post(f"/api/sessions/{giant['id']}/messages", json=body).status_code == 400
    assert chat(http, model=f"character/{giant['character']}").status_code == 400
    assert counts(server) == before
    assert http.get(f"/api/sessions/{giant['id']}").json() == giant

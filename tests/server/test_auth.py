"""API keys over real HTTP: once a key exists every request needs one, a key reaches only
its own user's data, keys are stored hashed; and a server refuses to listen beyond
loopback without keys (checked before any model loads)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from limelight.engine.async_engine import AsyncEngine
from limelight.server import auth
from limelight.server.app import ServeError, build_services
from limelight.server.settings import Settings
from limelight.store import ApiKey, Store
from tests.server.conftest import Server, start_server

FAST = {"max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Keys for alice and bob, created in the store before the server starts."""
    path = tmp_path_factory.mktemp("auth") / "limelight.db"
    store = Store(f"sqlite:///{path}")
    with store.session() as db:
        made = {user: auth.create_key(db, user, name="test") for user in ("alice", "bob")}
    store.close()
    return made | {"path": str(path)}


@pytest.fixture(scope="module")
def server(keys: dict[str, str]) -> Iterator[Server]:
    running = start_server(Path(keys["path"]), memory=False)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def anonymous(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def client_for(server: Server, key: str) -> httpx.Client:
    return server.client(headers={"authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def alice(server: Server, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with client_for(server, keys["alice"]) as client:
        yield client


@pytest.fixture(scope="module")
def bob(server: Server, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with client_for(server, keys["bob"]) as client:
        yield client


@pytest.fixture(scope="module")
def slug(alice: httpx.Client) -> str:
    return str(alice.get("/api/characters").json()[0]["slug"])


def unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert "Authorization: Bearer" in error["message"]


@pytest.mark.slow
def test_requests_without_a_valid_key_are_refused(
    server: Server, anonymous: httpx.Client, slug: str
) -> None:
    chat = {"model": f"character/{slug}", "messages": [{"role": "user", "content": "Hi"}]}
    for response in (
        anonymous.get("/v1/models"),
        anonymous.get("/api/characters"),
        anonymous.get(f"/api/characters/{slug}"),
        anonymous.get(f"/api/characters/{slug}/export"),
        anonymous.get("/api/sessions"),
        anonymous.post("/api/sessions", json={"character": slug}),
        anonymous.post("/v1/chat/completions", json=chat | FAST),
        anonymous.get("/api/stats"),
    ):
        unauthorized(response)
    for header in ("Bearer ll-not-a-real-key", "Bearer", "Basic YWxpY2U6eA==", "ll-x"):
        with server.client(headers={"authorization": header}) as client:
            unauthorized(client.get("/api/sessions"))


@pytest.mark.slow
def test_a_key_tells_its_user(
    anonymous: httpx.Client, alice: httpx.Client, bob: httpx.Client
) -> None:
    assert alice.get("/api/me").json() == {"user": "alice", "keys_required": True}
    assert bob.get("/api/me").json() == {"user": "bob", "keys_required": True}
    assert alice.get("/api/me", params={"user": "bob"}).status_code == 403
    unauthorized(anonymous.get("/api/me"))


@pytest.mark.slow
def test_a_key_reaches_its_own_users_sessions_only(
    server: Server, alice: httpx.Client, bob: httpx.Client, slug: str
) -> None:
    created = alice.post("/api/sessions", json={"character": slug})
    assert created.status_code == 201 and created.json()["user"] == "alice"
    sid = created.json()["id"]
    greeting = created.json()["messages"][0]["id"]
    assert alice.get(f"/api/sessions/{sid}").status_code == 200
    assert sid in {s["id"] for s in alice.get("/api/sessions").json()}

    assert sid not in {s["id"] for s in bob.get("/api/sessions").json()}
    for response in (
        bob.get(f"/api/sessions/{sid}"),
        bob.delete(f"/api/sessions/{sid}"),
        bob.post(f"/api/sessions/{sid}/messages", json={"content": "hi", **FAST}),
        bob.post(f"/api/sessions/{sid}/messages/{greeting}/branch"),
    ):
        assert response.status_code == 404, response.text
    assert alice.get(f"/api/sessions/{sid}").status_code == 200


@pytest.mark.slow
def test_naming_another_user_is_forbidden(alice: httpx.Client, slug: str) -> None:
    own = alice.get("/api/sessions", params={"user": "alice"})
    assert own.status_code == 200  # naming yourself is fine
    chat = {"model": f"character/{slug}", "messages": [{"role": "user", "content": "Hi"}]}
    for response in (
        alice.get("/api/sessions", params={"user": "bob"}),
        alice.post("/api/sessions", json={"character": slug, "user": "bob"}),
        alice.post("/v1/chat/completions", json=chat | FAST | {"user": "bob"}),
    ):
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["type"] == "permission_error" and "bob" in error["message"]


@pytest.mark.slow
def test_the_scheme_of_the_header_has_no_case(server: Server, keys: dict[str, str]) -> None:
    with server.client(headers={"authorization": f"bearer {keys['alice']}"}) as client:
        assert client.get("/api/sessions").status_code == 200


@pytest.mark.slow
def test_a_key_made_with_the_cli_while_serving_works_at_once(
    server: Server, keys: dict[str, str], slug: str
) -> None:
    url = f"sqlite:///{keys['path']}"
    result = subprocess.run(
        [sys.executable, "-m", "limelight", "keys", "create", "carol", "--database", url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    key = result.stdout.splitlines()[0].strip()
    assert key.startswith(auth.PREFIX) and "carol" in result.stdout
    with client_for(server, key) as carol:
        created = carol.post("/api/sessions", json={"character": slug})
        assert created.status_code == 201 and created.json()["user"] == "carol"


@pytest.mark.slow
def test_keys_are_stored_hashed(server: Server, keys: dict[str, str], alice: httpx.Client) -> None:
    assert alice.get("/api/sessions").status_code == 200  # the server has used the store
    store = Store(f"sqlite:///{keys['path']}")
    with store.session() as db:
        hashes = {row.user_id: row.key_hash for row in db.query(ApiKey)}
    store.close()
    for user in ("alice", "bob"):
        assert hashes[user] == hashlib.sha256(keys[user].encode()).hexdigest()
    files = [p for p in Path(keys["path"]).parent.iterdir() if p.name.startswith("limelight.db")]
    for path in files:  # the database and its WAL
        data = path.read_bytes()
        for user in ("alice", "bob"):
            assert keys[user].encode() not in data, path.name


def model_must_not_load(*_: Any, **__: Any) -> AsyncEngine:
    raise AssertionError("the model was loaded")


class ModelLoading(Exception):
    """The check passed and the services went on to load the model."""


def test_serving_beyond_loopback_without_keys_is_refused_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(AsyncEngine, "from_pretrained", model_must_not_load)
    url = f"sqlite:///{tmp_path / 'open.db'}"
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        with pytest.raises(ServeError, match="limelight keys create USER") as caught:
            build_services(Settings(host=host, database_url=url, memory=False))
        assert host in str(caught.value)


def test_loopback_without_keys_or_any_host_with_keys_may_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def loading(*_: Any, **__: Any) -> AsyncEngine:
        raise ModelLoading

    monkeypatch.setattr(AsyncEngine, "from_pretrained", loading)
    url = f"sqlite:///{tmp_path / 'keyed.db'}"
    for host in ("127.0.0.1", "localhost", "::1"):
        with pytest.raises(ModelLoading):
            build_services(Settings(host=host, database_url=url, memory=False))
    store = Store(url)
    with store.session() as db:
        auth.create_key(db, "alice")
    store.close()
    with pytest.raises(ModelLoading):
        build_services(Settings(host="0.0.0.0", database_url=url, memory=False))

"""Request size limits, enforced before a body is parsed (ASGI middleware).

A body over the limit is answered 413 with OpenAI's error body, whether it announces its
length or streams it; uploads (character files, recordings) get the larger upload limit.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from limelight.server.errors import error_body

UPLOAD_PATHS = re.compile(
    r"/api/characters/import|/v1/audio/transcriptions|/api/sessions/[^/]+/voice"
)


class BodyTooLarge(HTTPException):
    """A body past its limit, raised from `receive` as the bytes arrive.

    An `HTTPException`, because FastAPI turns any other error met while it reads a body
    into a 400; this one it passes on to `errors.py`, which answers 413 with `code`.
    """

    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"the request body is larger than this server's limit of {limit} bytes"
        )


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app, self.max_body, self.max_upload = app, max_body_bytes, max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_upload if UPLOAD_PATHS.fullmatch(scope["path"]) else self.max_body
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _reject(send, limit)
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if not started:
                await _reject(send, limit)


async def _reject(send: Send, limit: int) -> None:
    error = BodyTooLarge(limit)
    body: dict[str, Any] = error_body(413, error.detail, None, error.code)
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": payload})

"""Errors as OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.

Every failure the server answers (validation, unknown model, size limits, missing rows,
errors the engine and product packages raise on purpose) goes through here, so a client
always gets a status, a message naming the problem, and never a traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from limelight.characters import CardError
from limelight.chat import ChatError, PromptTooLong
from limelight.chat.tree import ChatInputError
from limelight.engine.errors import LimelightError, RequestError
from limelight.memory.service import MemoryLookupError
from limelight.voice import VoiceError

log = logging.getLogger("limelight.server")

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    500: "server_error",
}


class APIError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict:
    kind = TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(_: Request, err: APIError) -> JSONResponse:
        return error_response(err.status, err.message, err.param, err.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            return error_response(400, "the request body is not valid JSON", None, "invalid_json")
        return error_response(400, f"{where}: {message}" if where else message, where or None)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, err: HTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail), code=getattr(err, "code", None))

    statuses = (
        (RequestError, 400),
        (PromptTooLong, 400),
        (CardError, 400),
        (ChatInputError, 400),  # a ChatError too: handlers go by the MRO, so this one wins
        (ChatError, 404),
        (MemoryLookupError, 404),
        (VoiceError, 400),  # unknown voice, empty text, audio that cannot be decoded
        (LimelightError, 400),  # every other error limelight raises on purpose names it
    )
    for kind, status in statuses:
        app.add_exception_handler(kind, _status_handler(status))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, f"internal error: {type(err).__name__}")


def _status_handler(status: int):  # type: ignore[no-untyped-def]
    async def handle(_: Request, err: Exception) -> JSONResponse:
        return error_response(status, str(err))

    return handle

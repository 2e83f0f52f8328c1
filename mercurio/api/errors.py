"""Every error leaves as JSON `{"error": "..."}` with an honest status."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import Send

from mercurio.auth import AuthError
from mercurio.errors import StoreUnavailable


class ErrorBody(BaseModel):
    """Every error answer: `{"error": "..."}`."""

    error: str


# Declared on every route, so the OpenAPI document shows the errors the API really answers
# (FastAPI would otherwise document only its own 422 shape, which Mercurio never sends).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in [
        (400, "Bad input"),
        (401, "No or bad token"),
        (403, "The token may not do this"),
        (404, "Not found"),
        (409, "Event id already used by this publisher for different content"),
        (413, "Body too large"),
        (422, "Invalid body"),
        (429, "Too many requests"),
        (503, "Store unavailable; retry later"),
    ]
}


STORE_UNAVAILABLE = "store unavailable, retry later"


class ApiError(Exception):
    """A request the service refuses, with its status and message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def send_error(
    send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer a raw ASGI request with a JSON error (the stream route has no framework)."""
    body = orjson.dumps({"error": message})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or ()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _describe_validation(errors: list[dict[str, Any]]) -> tuple[int, str]:
    first = errors[0]
    if first.get("type") == "json_invalid":
        return 400, "request body is not valid JSON"
    location = [str(part) for part in first.get("loc", ()) if part not in ("body",)]
    where = ".".join(location)
    message = str(first.get("msg", "invalid input")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    if first.get("type") == "missing" and not where:
        return 400, "request body is missing"
    return 422, f"{where}: {message}" if where else message


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception the routes can raise to a JSON error."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(AuthError)
    async def _auth_error(_: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.message, headers)

    @app.exception_handler(StoreUnavailable)
    async def _store_error(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return error_response(503, STORE_UNAVAILABLE, {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _describe_validation(list(exc.errors()))
        return error_response(status, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and message == "Not Found":
            message = "not found"
        elif exc.status_code == 405:
            message = "method not allowed"
        return error_response(exc.status_code, message, dict(exc.headers) if exc.headers else None)

"""The one place where domain errors become HTTP responses.

Every error body has the shape ``{"error": {"type": "...", "message": "..."}}``. Domain errors keep their
message (it names the bad value); anything unexpected is answered 500 with a generic message and logged in
full on the server, so internals never leak to clients.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from common.errors import (
    BackendUnavailable,
    EncoderMismatch,
    FetchFailed,
    ImageTooLarge,
    InvalidInput,
    NotFound,
    Overloaded,
    RequestTooLarge,
    Unauthorized,
    UnsafeURL,
    UnsupportedImage,
    VitrineError,
)

logger = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of decides its status.
STATUS_OF: tuple[tuple[type[VitrineError], int], ...] = (
    (UnsafeURL, 400),  # an image URL on a non-public address
    (FetchFailed, 400),  # an image URL that could not be fetched
    (UnsupportedImage, 415),
    (ImageTooLarge, 413),
    (RequestTooLarge, 413),  # a request body over api.max_body_bytes
    (InvalidInput, 422),  # InvalidQuery included
    (Unauthorized, 401),  # no valid X-API-Key where one is needed (api.auth)
    (NotFound, 404),
    (EncoderMismatch, 409),
    (BackendUnavailable, 503),  # StoreLocked included
    (Overloaded, 429),  # generation jobs running and queued to the limit
)
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'}
"""The headers of every 401: the scheme and where the key goes (api.auth)."""
INTERNAL_MESSAGE = "internal error; the server log has the details"
MAX_ECHO_CHARS = 100
"""Most characters of a bad value that a validation message quotes back."""

_LOCATION_NAMES = {"query": "query parameter", "path": "path parameter", "body": "body field",
                   "header": "header", "cookie": "cookie"}


class ErrorDetail(BaseModel):
    """What went wrong."""

    type: str
    message: str


class ErrorBody(BaseModel):
    """The JSON body of every error response."""

    error: ErrorDetail


def status_of(error: Exception) -> int:
    """The HTTP status of an error: its domain class's, or 500."""
    for cls, status in STATUS_OF:
        if isinstance(error, cls):
            return status
    return 500


def error_response(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON error response of the shared shape."""
    body = ErrorBody(error=ErrorDetail(type=kind, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _echo(value: Any) -> str:
    """``repr(value)``, cut after `MAX_ECHO_CHARS` characters: a client's megabyte of text is not sent back."""
    text = repr(value)
    if len(text) <= MAX_ECHO_CHARS:
        return text
    length = f"; {len(value)} characters in all" if isinstance(value, str) else ""
    return f"{text[:MAX_ECHO_CHARS]}... (cut{length})"


def describe_request_errors(errors: Sequence[Any]) -> str:
    """One line naming each bad parameter (``query parameter 'limit': ... (got 'abc')``)."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        where = _LOCATION_NAMES.get(loc[0], loc[0]) if loc else "request"
        name = ".".join(loc[1:])
        given = err.get("input")
        shown = "" if err.get("type") == "missing" or isinstance(given, dict | list) else f" (got {_echo(given)})"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where} {name!r}: {message}{shown}" if name else f"{loc[0] if loc else 'request'}: "
                     f"{message}{shown}")
    return "; ".join(parts) or "invalid request"


async def _vitrine_error(request: Request, exc: Exception) -> JSONResponse:
    status = status_of(exc)
    if status >= 500 and status != 503:
        logger.exception("error answering %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(status, "InternalError", INTERNAL_MESSAGE)
    headers = {"Retry-After": "5"} if status == 503 else UNAUTHORIZED_HEADERS if status == 401 else None
    if isinstance(exc, Overloaded):
        headers = {"Retry-After": str(exc.retry_after)}
    return error_response(status, type(exc).__name__, str(exc), headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "InvalidInput", describe_request_errors(exc.errors()))


BODY_PARSE_ERROR = "There was an error parsing the body"
"""FastAPI's 400 for a body it cannot read at all (JSON that is not UTF-8)."""


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """The methods some route answers at the request's path (Starlette's 405 names only the first route's)."""
    return [method for method in _METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                   for route in request.app.router.routes)]


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 400:  # the framework's: a body it cannot parse (the app's own 400s are VitrineErrors)
        # Answered 422 like any other malformed body (FastAPI's own answer to invalid JSON): one documented status.
        what = "cannot be parsed" if exc.detail == BODY_PARSE_ERROR else str(exc.detail).rstrip(".")
        return error_response(422, "InvalidInput", f"request body: {what}; expected UTF-8 JSON, or a multipart "
                              "form for uploads, as the route documents")
    if exc.status_code == 405 and (methods := allowed_methods(request)):
        headers["Allow"] = ", ".join(methods)
    return error_response(exc.status_code, "HTTPError", str(exc.detail), headers or None)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "InternalError", INTERNAL_MESSAGE)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the shared JSON shape."""
    app.add_exception_handler(VitrineError, _vitrine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


_DESCRIPTIONS = {
    400: "An image URL that is refused (not a public address) or cannot be fetched",
    401: "No valid API key in the X-API-Key header where one is needed (settings group auth)",
    404: "Not found",
    409: "The collection was built with another encoder",
    413: "Request body or upload over the size limit, or an image over the pixel limit",
    415: "Not a supported image",
    422: "A bad parameter (named in the message)",
    429: "Too many generation jobs running and waiting; try again after Retry-After seconds",
    503: "Not ready: the model or store is loading, or failed to load",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` documenting the error shape for these statuses."""
    return {status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]} for status in statuses}

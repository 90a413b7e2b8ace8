"""Per-request observability: the request id, the request metrics and the access log.

`ObservabilityMiddleware` is a pure ASGI middleware and must be the outermost one (added last), so that it sees
every response, the 413s of the size-limit middlewares included:

* the request id is the client's ``X-Request-ID`` when it is a plain token (``^[A-Za-z0-9._:-]{1,128}$``),
  otherwise a new ``uuid4().hex``; it is put in `common.logging.request_id_var` (every log record made while
  answering carries it, in FastAPI's worker threads too) and sent back in the ``X-Request-ID`` header;
* ``vitrine_http_requests_total{method,route,status}`` and ``vitrine_http_request_duration_seconds{method,route}``
  are labelled by the route's template (``/products/{product_id:path}``), ``unmatched`` when no route matched, so
  the number of series stays bounded whatever paths clients send;
* one line per request on the logger ``vitrine.access``: method, path (never the query string: it holds
  shoppers' words), status, duration, client address and request id, as ``extra=`` fields for JSON logs.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import INTERNAL_MESSAGE, error_response
from common.logging import request_id_var
from common.metrics import HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS

access_logger = logging.getLogger("vitrine.access")

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNMATCHED = "unmatched"
"""The route label of requests no route matched (404s of unknown paths)."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods that label the request metrics as themselves; any other is counted as ``OTHER``."""


def request_id_of(incoming: str | None) -> str:
    """The client's request id when it is a plain token of at most 128 characters, otherwise a new one."""
    if incoming is not None and REQUEST_ID_PATTERN.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def route_of(scope: Scope) -> str:
    """The template of the route that answered (set in the scope by the router), or `UNMATCHED`."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class ObservabilityMiddleware:
    """Request id, request metrics and access log for every HTTP request (see the module's description).

    An exception that escapes the app before a response started is answered here with the shared 500 error
    body, so that it too has the request id; the exception then goes on to Starlette's server-error handler
    (which logs it, with the id) as before.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((value.decode("latin-1") for name, value in scope.get("headers", ())
                         if name == b"x-request-id"), None)
        request_id = request_id_of(incoming)
        # Not reset afterwards: each request runs in its own task, whose context copy ends with it, and the
        # server-error handler outside this middleware logs an escaped exception with the id still set.
        request_id_var.set(request_id)
        status = 500
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started_response = True
                message.setdefault("headers", [])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        started = time.perf_counter()
        HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if not started_response:
                await error_response(500, "InternalError", INTERNAL_MESSAGE)(scope, receive, send_with_id)
            raise
        finally:
            HTTP_IN_FLIGHT.dec()
            seconds = time.perf_counter() - started
            method = str(scope.get("method", ""))
            label = method if method in METHODS else "OTHER"
            route = route_of(scope)
            HTTP_REQUESTS.labels(label, route, str(status)).inc()
            HTTP_DURATION.labels(label, route).observe(seconds)
            client = scope.get("client")
            address = f"{client[0]}:{client[1]}" if client else None
            path = str(scope.get("path", ""))
            duration_ms = round(seconds * 1000.0, 3)
            access_logger.info("%s %s %d %.1f ms", method, path, status, duration_ms,
                               extra={"method": method, "path": path, "route": route, "status": status,
                                      "duration_ms": duration_ms, "client": address, "request_id": request_id})

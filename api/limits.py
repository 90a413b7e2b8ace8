"""Bounds on request bodies, applied before a route (and FastAPI's parser) sees them.

`BodyLimitMiddleware` answers 413 for a body over ``api.max_body_bytes`` (declared in Content-Length, or counted
while a chunked body arrives) and 422 for a JSON body nested deeper than ``api.max_json_depth``, found by a scan of
the bytes (brackets outside strings) rather than by parsing, so a body of a million ``[`` costs one pass and never
reaches the recursive JSON parser. Upload routes are bounded by ``api.max_upload_bytes`` instead: their declared
lengths by `api.uploads.UploadLimitMiddleware`, their chunked bodies counted here as they stream through.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from api.uploads import FORM_OVERHEAD_BYTES
from common.errors import ImageTooLarge, InvalidInput, RequestTooLarge

logger = logging.getLogger(__name__)

_STEP = np.zeros(256, dtype=np.int32)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1
_QUOTE, _BACKSLASH = ord('"'), ord("\\")


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (brackets inside strings do not count).

    Vectorised and linear in the length, without recursion or regular expressions: a quote is escaped when an
    odd run of backslashes precedes it, a byte is inside a string when an odd number of unescaped quotes precede
    it, and the depth is the highest running sum of the brackets outside strings. The text need not be valid JSON
    (the result is exact up to its first error, which is as far as a parser gets).
    """
    if b"[" not in body and b"{" not in body:
        return 0
    data = np.frombuffer(body, dtype=np.uint8)
    steps = _STEP[data]
    quotes = data == _QUOTE
    if quotes.any():
        backslash = data == _BACKSLASH
        if backslash.any():
            positions = np.arange(data.size, dtype=np.int32)
            last_other = np.maximum.accumulate(np.where(backslash, np.int32(-1), positions))
            run = np.zeros(data.size, dtype=np.int32)  # backslashes just before each byte
            run[1:] = positions[:-1] - last_other[:-1]
            quotes &= run % 2 == 0
        steps[np.cumsum(quotes, dtype=np.int32) % 2 == 1] = 0
    return max(0, int(np.cumsum(steps, dtype=np.int32).max()))


def is_json(content_type: bytes | None) -> bool:
    """Whether FastAPI would parse a body of this Content-Type as JSON (none at all included)."""
    if not content_type:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    main, _, sub = media.partition(b"/")
    return main == b"application" and (sub == b"json" or sub.endswith(b"+json"))


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_body_bytes`` (413) and JSON bodies nested deeper than ``max_json_depth``
    (422), naming the setting.

    Bodies of other routes are read here in full (they are small by this very limit), checked, then handed to the
    app. Bodies of ``upload_paths`` pass through as they stream; one without a Content-Length is counted, and
    once over ``max_upload_bytes`` plus `api.uploads.FORM_OVERHEAD_BYTES` the request is answered 413 instead of
    whatever the route would have said.

    Args:
        app: the wrapped ASGI app.
        max_body_bytes: largest body of a non-upload request (setting api.max_body_bytes).
        max_json_depth: deepest nesting of a JSON body (setting api.max_json_depth).
        upload_paths: the routes that take uploads (bounded by the upload limit instead).
        max_upload_bytes: the upload limit (setting api.max_upload_bytes).
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_json_depth: int, upload_paths: tuple[str, ...] = (),
                 max_upload_bytes: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.upload_paths = upload_paths
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if scope["path"] in self.upload_paths:
            if declared is None and self.max_upload_bytes is not None:
                await self._stream_upload(scope, receive, send, self.max_upload_bytes)
            else:
                await self.app(scope, receive, send)
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, receive, send, f"{int(declared)} bytes")
            return
        if (declared is None or declared == b"0") and b"transfer-encoding" not in headers:  # no body
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(scope, receive, send, f"more than {self.max_body_bytes} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body.count(b"[") + body.count(b"{") > self.max_json_depth and is_json(headers.get(b"content-type")):
            depth = json_depth(body)
            if depth > self.max_json_depth:
                logger.info("refused a JSON body nested %d deep to %s", depth, scope["path"])
                response = error_response(
                    422, InvalidInput.__name__,
                    f"JSON body nested {depth} levels deep is over the limit of {self.max_json_depth} levels "
                    "(setting api.max_json_depth)")
                await response(scope, receive, send)
                return
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        logger.info("refused a body of %s to %s %s", size, scope["method"], scope["path"])
        response = error_response(
            413, RequestTooLarge.__name__,
            f"request body of {size} is over the limit of {self.max_body_bytes} bytes (setting api.max_body_bytes)",
            headers={"Connection": "close"})
        await response(scope, receive, send)

    async def _stream_upload(self, scope: Scope, receive: Receive, send: Send, max_upload_bytes: int) -> None:
        """Pass a chunked upload through, counting it; past the limit, the app's reads fail and the answer is
        413 (whatever the app tried to send instead is dropped)."""
        limit = max_upload_bytes + FORM_OVERHEAD_BYTES
        size = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal size, over
            if over:
                raise _OverLimit
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    over = True
                    raise _OverLimit
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                return
            started = True
            await send(message)

        with contextlib.suppress(_OverLimit):
            await self.app(scope, counting_receive, guarded_send)
        if over and not started:
            logger.info("refused a chunked upload of more than %d bytes to %s", limit, scope["path"])
            response = error_response(
                413, ImageTooLarge.__name__,
                f"upload of more than {limit} bytes is over the limit of {max_upload_bytes} bytes "
                "(setting api.max_upload_bytes)", headers={"Connection": "close"})
            await response(scope, receive, send)


class _OverLimit(Exception):
    """A streamed body went over its limit (raised into the app's read; the middleware answers 413)."""


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` first, then reads on (a disconnect, once the body is read)."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay

"""The part the loopback fakes of OpenAI's APIs share: scripted replies, recorded requests, serving in a thread.

A subclass of `LoopbackServer` says how a request body is read (`LoopbackServer.parse`, into its own `SeenRequest`
subclass) and what the well-behaved fake answers (`LoopbackServer.default_reply`). Every POST is recorded in
``seen``; the ``script`` of `Reply` is served first, in order; then the default reply after ``delay_s``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar

from tests.http_server import QuietHandler


@dataclass
class Reply:
    """One scripted reply: a status, a JSON body (dict) or raw bytes, headers, and a delay before it."""

    status: int = 200
    body: dict[str, Any] | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class SeenRequest:
    """One request as the server got it: its path and headers."""

    path: str
    headers: dict[str, str]  # names in lower case


SeenT = TypeVar("SeenT", bound=SeenRequest)


class LoopbackServer(Generic[SeenT]):
    """A fake API on 127.0.0.1: ``url`` (the base URL, ending in /v1), ``seen`` requests, ``script`` of replies.

    ``delay_s`` delays every default reply; ``in_flight`` and ``max_in_flight`` count requests being answered.
    """

    def __init__(self) -> None:
        self.seen: list[SeenT] = []
        self.script: deque[Reply] = deque()
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.url = f"http://127.0.0.1:{self._server.server_port}/v1"

    def parse(self, path: str, headers: dict[str, str], raw: bytes) -> SeenT:
        """The request as recorded in ``seen`` (``headers`` with names in lower case)."""
        raise NotImplementedError

    def default_reply(self, seen: SeenT) -> Reply:
        """What the well-behaved fake answers."""
        raise NotImplementedError

    def _handler(self) -> type[QuietHandler]:
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server calls it by this name
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                seen = server.parse(self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
                with server._lock:
                    server.seen.append(seen)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    scripted = server.script.popleft() if server.script else None
                try:
                    reply = scripted or server.default_reply(seen)
                    time.sleep(reply.delay_s or (0.0 if scripted else server.delay_s))
                    body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                    with contextlib.suppress(OSError):  # the client may have given up
                        self.send(reply.status, body, {"Content-Type": "application/json", **reply.headers})
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler

    @property
    def paths(self) -> list[str]:
        """The paths of the requests seen."""
        return [seen.path for seen in self.seen]

    @contextmanager
    def running(self) -> Iterator[Self]:
        """Serve in a thread while the block runs."""
        thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

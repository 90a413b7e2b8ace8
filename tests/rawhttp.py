"""HTTP/1.1 by hand over a socket, for requests an HTTP client will not send as asked: a Content-Length with no
body behind it, a chunked body that goes on after the server has answered."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    """A parsed HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def chunked(parts: Iterable[bytes]) -> Iterable[bytes]:
    """``parts`` in chunked transfer coding, the last chunk included."""
    for part in parts:
        if part:
            yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


def exchange(base_url: str, method: str, path: str, *, headers: dict[str, str] | None = None,
             body: Iterable[bytes] = (), timeout: float = 30.0) -> Reply:
    """Send a request head and then the ``body`` pieces, stopping early once the server answers; read the reply.

    Nothing is added to ``headers`` but Host: say Content-Length or Transfer-Encoding yourself.
    """
    url = urlsplit(base_url)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {url.hostname}:{url.port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=timeout) as conn:
        conn.sendall(head)
        try:
            for piece in body:
                readable, _, _ = select.select([conn], [], [], 0)
                if readable:  # the server answered already: stop sending
                    break
                conn.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we sent; its answer is still to be read
        return _read_reply(conn)


def _read_reply(conn: socket.socket) -> Reply:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(conn)
        if not chunk:
            raise ConnectionError(f"no complete response head (got {data[:200]!r})")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = _recv(conn)
        if not chunk:
            break
        rest += chunk
    return Reply(status=int(status_line.split()[1]), headers=headers, body=rest[:length])


def _recv(conn: socket.socket) -> bytes:
    try:
        return conn.recv(65536)
    except ConnectionResetError:
        return b""

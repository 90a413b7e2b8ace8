"""A small OpenAI chat-completions server on loopback that records requests and misbehaves on demand.

It speaks the protocol the ``openai`` client speaks (POST /v1/chat/completions, JSON in and out). By default it
answers like a model that says "yes" to products whose text holds a word of ``YES_WORDS``: with logprobs
when asked for them (unless ``logprobs`` is off), or with the JSON object of the JSON-schema form. Scripted
replies (`Reply`) are served first, in order: statuses, headers, raw bodies and delays.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from tests.http_server import QuietHandler

YES_WORDS = ("shoes", "sneakers")
P_MATCH = 0.9
P_OTHER = 0.2


@dataclass
class Reply:
    """One scripted reply: a status, a JSON body (dict) or raw bytes, headers, and a delay before it."""

    status: int = 200
    body: dict[str, Any] | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Seen:
    """One request as the server got it."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]

    @property
    def text(self) -> str:
        """The text parts of the user message, joined."""
        content = self.body["messages"][0]["content"]
        return " ".join(part["text"] for part in content if part["type"] == "text")

    @property
    def image_urls(self) -> list[str]:
        """The image_url parts' URLs, in order."""
        content = self.body["messages"][0]["content"]
        return [part["image_url"]["url"] for part in content if part["type"] == "image_url"]


def relevance(text: str) -> float:
    """The probability of "yes" the fake model gives a prompt."""
    product = text.split("The product:", 1)[-1]
    return P_MATCH if any(word in product for word in YES_WORDS) else P_OTHER


def completion(content: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A chat.completion object with one choice."""
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content},
                     "logprobs": {"content": logprobs} if logprobs is not None else None}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def yes_no_completion(p_yes: float, *, yes: str = "Yes", no: str = " no") -> dict[str, Any]:
    """A one-token answer whose top logprobs give ``p_yes`` to ``yes`` and the rest to ``no``."""
    top: list[dict[str, Any]] = [{"token": yes, "logprob": math.log(p_yes), "bytes": None},
                                 {"token": no, "logprob": math.log(1.0 - p_yes), "bytes": None},
                                 {"token": "Maybe", "logprob": -20.0, "bytes": None}]
    top.sort(key=lambda item: -item["logprob"])
    first = top[0]
    return completion(str(first["token"]), [{**first, "top_logprobs": top}])


class FakeChatServer:
    """The server: ``url`` (the base URL, ending in /v1), ``seen`` requests, ``script`` of replies."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: deque[Reply] = deque()
        self.logprobs = True
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.url = f"http://127.0.0.1:{self._server.server_port}/v1"

    def _handler(self) -> type[QuietHandler]:
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server calls it by this name
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with server._lock:
                    server.seen.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()},
                                            json.loads(raw)))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    scripted = server.script.popleft() if server.script else None
                try:
                    reply = scripted or server.default_reply(server.seen[-1])
                    time.sleep(reply.delay_s or (0.0 if scripted else server.delay_s))
                    body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                    self.send(reply.status, body, {"Content-Type": "application/json", **reply.headers})
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler

    def default_reply(self, seen: Seen) -> Reply:
        """What the well-behaved fake model answers."""
        if seen.path != "/v1/chat/completions":
            return Reply(404, {"error": {"message": f"no route {seen.path}"}})
        p_yes = relevance(seen.text)
        if seen.body.get("response_format"):
            return Reply(body=completion(json.dumps({"relevant": p_yes > 0.5, "score": p_yes})))
        if seen.body.get("logprobs") and self.logprobs:
            return Reply(body=yes_no_completion(p_yes))
        return Reply(body=completion("yes" if p_yes > 0.5 else "no"))

    @property
    def paths(self) -> list[str]:
        """The paths of the requests seen."""
        return [seen.path for seen in self.seen]

    @contextmanager
    def running(self) -> Iterator[FakeChatServer]:
        """Serve in a thread while the block runs."""
        thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

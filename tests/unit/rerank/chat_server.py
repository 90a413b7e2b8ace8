"""A small OpenAI chat-completions server on loopback that records requests and misbehaves on demand.

It speaks the protocol the ``openai`` client speaks (POST /v1/chat/completions, JSON in and out). By default it
answers like a model that says "yes" to products whose text holds a word of ``YES_WORDS``: with logprobs
when asked for them (unless ``logprobs`` is off), or with the JSON object of the JSON-schema form. Scripted
replies (`Reply`) are served first, in order: statuses, headers, raw bodies and delays.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from tests.loopback import LoopbackServer, Reply, SeenRequest

YES_WORDS = ("shoes", "sneakers")
P_MATCH = 0.9
P_OTHER = 0.2


@dataclass
class Seen(SeenRequest):
    """One request as the server got it: path, headers and JSON body."""

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


class FakeChatServer(LoopbackServer[Seen]):
    """The server (`tests.loopback.LoopbackServer`); ``logprobs = False`` answers without logprobs."""

    def __init__(self) -> None:
        super().__init__()
        self.logprobs = True

    def parse(self, path: str, headers: dict[str, str], raw: bytes) -> Seen:
        """The JSON body."""
        return Seen(path, headers, json.loads(raw))

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

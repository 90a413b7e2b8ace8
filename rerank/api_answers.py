"""Reading the answers of a chat-completions server: P(yes) from logprobs, or the score of a JSON answer."""

from __future__ import annotations

import json
import math
from typing import Any

from rerank.prompt import answer_word

RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "relevance",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "relevant": {"type": "boolean"},
                "score": {"type": "number", "description": "0: does not match, 1: matches perfectly"},
            },
            "required": ["relevant", "score"],
            "additionalProperties": False,
        },
    },
}


class OffFormat(Exception):
    """A reply whose logprobs hold neither "yes" nor "no"."""


def yes_probability(completion: Any) -> float | None:
    """P(yes) / (P(yes) + P(no)) from the first answer token's top logprobs; ``None`` without logprobs.

    Raises:
        OffFormat: logprobs are there but none of their tokens is "yes" or "no".
        AttributeError, IndexError, TypeError: a malformed reply.
    """
    logprobs = completion.choices[0].logprobs
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    if not content:
        return None
    first = content[0]
    seen: dict[str, float] = {first.token: float(first.logprob)}
    for item in first.top_logprobs or []:
        seen.setdefault(item.token, float(item.logprob))
    mass = {"yes": 0.0, "no": 0.0}
    for token, logprob in seen.items():
        word = answer_word(token)
        if word is not None and math.isfinite(logprob):
            mass[word] += math.exp(logprob)
    total = mass["yes"] + mass["no"]
    if total <= 0.0:
        raise OffFormat(f"the first answer token {first.token!r} and its alternatives are neither yes nor no")
    return mass["yes"] / total


def json_score(content: str | None) -> float:
    """The score of a JSON-form answer, clipped to [0, 1].

    Raises:
        ValueError: not a JSON object with a numeric ``score`` or a boolean ``relevant``.
    """
    text = (content or "").strip()
    if text.startswith("```"):  # some servers fence JSON even under a schema
        text = text.strip("`").removeprefix("json").strip()
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {text[:80]!r}")
    score = data.get("score")
    if isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score):
        return min(1.0, max(0.0, float(score)))
    relevant = data.get("relevant")
    if isinstance(relevant, bool):
        return 1.0 if relevant else 0.0
    raise ValueError(f"expected {{'relevant': bool, 'score': number}}, got {text[:80]!r}")

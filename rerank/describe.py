"""Product descriptions written by the re-rank model, for catalog enrichment (``vitrine enrich``).

Both backends implement `Describer` beside `rerank.Reranker`, sharing its model or API client: the
transformers backend generates greedily (``max_new_tokens``) and answers in lines (``Description: ...`` then
``colour: ...``), the openai backend answers a strict JSON schema (`DESCRIPTION_FORMAT`). Both prompts come from
`rerank.prompt.describe_parts`.

Answers are parsed defensively (`parse_lines`, `parse_json`). What is kept:

- the description: whitespace collapsed, at most 2 sentences and `MAX_DESCRIPTION_CHARS` characters; a plain
  answer without the ``Description:`` label is kept as the description (best effort);
- attributes: only the names of `rerank.prompt.ATTRIBUTE_NAMES` (``color`` read as ``colour``), values of at
  most `MAX_ATTRIBUTE_CHARS` characters; empty values and "none", "n/a", "unknown", "null" dropped.

An answer that leaves no usable description fails cleanly for that product (`common.errors.RerankFailed`,
never another exception): empty, fewer than `MIN_WORDS` words of letters, or degenerate (fewer than a third of
its words distinct: a random or looping model).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rerank.prompt import ATTRIBUTE_NAMES
from rerank.protocol import Candidate

MAX_DESCRIPTION_CHARS = 400
MAX_SENTENCES = 2
MAX_ATTRIBUTE_CHARS = 60
MIN_WORDS = 3
MIN_DISTINCT_SHARE = 1 / 3
_EMPTY_VALUES = frozenset({"", "none", "n/a", "na", "unknown", "null", "-", "not visible", "not shown"})
_ALIASES = {"color": "colour", "colours": "colour", "colors": "colour", "materials": "material"}
_WORD = re.compile(r"[^\W\d_]{2,}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

DESCRIPTION_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "product_description",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "description": {"type": "string", "description": "at most 2 factual sentences"},
                "attributes": {
                    "type": "object",
                    "properties": {name: {"type": ["string", "null"]} for name in ATTRIBUTE_NAMES},
                    "required": list(ATTRIBUTE_NAMES),
                    "additionalProperties": False,
                },
            },
            "required": ["description", "attributes"],
            "additionalProperties": False,
        },
    },
}
"""The ``response_format`` of the openai backend's description requests (strict: every key required)."""


@dataclass(frozen=True)
class Description:
    """A generated product description.

    Attributes:
        text: at most 2 factual sentences.
        attributes: attribute name (`rerank.prompt.ATTRIBUTE_NAMES`) -> value, only those the model gave.
    """

    text: str
    attributes: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Describer(Protocol):
    """A vision-language model that writes a short factual description of a product from its photo and text.

    (The method is ``describe_product``: ``describe()`` is the re-rankers' /stats description.)
    """

    @property
    def name(self) -> str:
        """The model id (hub name, folder or API model name); recorded with every description."""
        ...

    def load(self) -> None:
        """Load weights or open the API client now (idempotent)."""
        ...

    def describe_product(self, item: Candidate, *, deadline: float | None = None) -> Description:
        """A description of ``item`` from its photo (if any) and text.

        Args:
            item: the product (its ``text``: title, brand, category and description, as re-ranking uses).
            deadline: a `time.monotonic()` instant by which to be done; ``None``: no limit.

        Raises:
            RerankTimeout: the deadline passed first.
            RerankFailed: the model or the API failed, or gave no usable description.
        """
        ...


def clean_description(text: str) -> str:
    """``text`` as a stored description: one line, at most 2 sentences and `MAX_DESCRIPTION_CHARS` characters.

    Raises:
        ValueError: nothing usable: fewer than `MIN_WORDS` words, or mostly the same words repeated.
    """
    flat = " ".join(text.replace("**", "").split()).strip(" \"'`")
    words = [word.lower() for word in _WORD.findall(flat)]
    if len(words) < MIN_WORDS:
        raise ValueError(f"expected a description of at least {MIN_WORDS} words, got {flat[:80]!r}")
    if len(words) >= 2 * MIN_WORDS and len(set(words)) < MIN_DISTINCT_SHARE * len(words):
        raise ValueError(f"the answer repeats the same words ({len(set(words))} distinct of {len(words)}): "
                         f"{flat[:80]!r}")
    sentences = _SENTENCE_END.split(flat)
    kept = " ".join(sentences[:MAX_SENTENCES])
    if len(kept) > MAX_DESCRIPTION_CHARS:
        kept = kept[: MAX_DESCRIPTION_CHARS - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return kept


def _attribute(name: object, value: object) -> tuple[str, str] | None:
    if not isinstance(name, str) or not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    key = name.strip().lower().replace(" ", "_")
    key = _ALIASES.get(key, key)
    text = " ".join(str(value).split()).strip(" .\"'`*")
    if key not in ATTRIBUTE_NAMES or text.lower() in _EMPTY_VALUES:
        return None
    return key, text[:MAX_ATTRIBUTE_CHARS].rstrip()


def parse_lines(answer: str) -> Description:
    """A ``Description: ...`` / ``colour: ...`` answer (the transformers form); plain text is the description.

    Raises:
        ValueError: no usable description (see `clean_description`).
    """
    described: list[str] = []
    attributes: dict[str, str] = {}
    for raw in answer.splitlines():
        line = raw.strip().lstrip("-*• ").strip()
        if not line:
            continue
        name, sep, value = line.partition(":")
        label = name.strip().strip("*").strip().lower()
        if sep and label == "description":
            described.append(value)
            continue
        found = _attribute(label, value) if sep else None
        if found is not None:
            attributes.setdefault(*found)
        elif not attributes and not (sep and label in {*ATTRIBUTE_NAMES, *_ALIASES}):
            described.append(line)  # text before the attributes, labelled or not
    return Description(clean_description(" ".join(described)), attributes)


def parse_json(answer: str | None) -> Description:
    """A JSON answer ``{"description": str, "attributes": {name: value}}`` (the openai form).

    ``attributes`` may also be a list of ``{"name": ..., "value": ...}`` objects; unknown names are dropped.

    Raises:
        ValueError: not such a JSON object, or no usable description.
    """
    text = (answer or "").strip()
    if text.startswith("```"):  # some servers fence JSON even under a schema
        text = text.strip("`").removeprefix("json").strip()
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("description"), str):
        raise ValueError(f'expected {{"description": str, "attributes": {{...}}}}, got {text[:80]!r}')
    given = data.get("attributes")
    pairs: list[tuple[object, object]] = []
    if isinstance(given, Mapping):
        pairs = list(given.items())
    elif isinstance(given, list):
        pairs = [(item.get("name"), item.get("value")) for item in given if isinstance(item, Mapping)]
    attributes: dict[str, str] = {}
    for name, value in pairs:
        found = _attribute(name, value)
        if found is not None:
            attributes.setdefault(*found)
    return Description(clean_description(data["description"]), attributes)

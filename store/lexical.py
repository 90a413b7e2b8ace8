"""The lexical index: a sparse BM25 vector named ``lexical`` per product, built by Qdrant's own BM25.

Both backends store it beside the dense vectors, with Qdrant's IDF modifier: the engine keeps the
inverse document frequencies of the whole collection up to date, so a document's vector only holds its
term-frequency part and a query's vector only says which terms it has.

What is indexed (`lexical_text`): a product's title, brand, category and description, plus the values of
the identifier attributes in `IDENTIFIER_ATTRIBUTES` (``sku``, ``model_number``, ``gtin``, ...) so an exact
SKU, brand or model-number query ("Saltmarsh SM-AB9779-KH") finds the product; and the description that
`vitrine enrich` generated for a thin product (payload ``generated.description``), so a word it names ("leather")
finds the product too. The title is counted
`TITLE_REPEATS` times (a cheap BM25F field weight): a word in the title says more about the product than the
same word in a description ("warm winter coat" is about coats, not about a sweater "warm enough for winter").

Tokens are lower-cased, ASCII-folded words (Qdrant's word tokenizer; "SM-AB9779-KH" becomes "sm", "ab9779",
"kh"), English stop words dropped and words stemmed (Qdrant's defaults: "running shoes" matches "run shoe").

The text is derived from the payload inside the store, so the vector can never disagree with the payload
it sits beside: whoever writes a payload (`upsert`, `set_payload`) writes its lexical vector too.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import qdrant_edge as qe

from common.product import GENERATED_FIELD, GENERATED_SOURCE
from store.frozen import FrozenDict

LEXICAL = "lexical"
"""Name of the sparse vector."""

LEXICAL_VERSION = 2
"""Bumped whenever `lexical_text` or `BM25` change, so the indexer rewrites every product's lexical vector.
(Adding ``generated.description`` changed no stored product's text: only `vitrine enrich` writes it, and its
writes rebuild the lexical vector.)"""

TEXT_FIELDS = ("title", "brand", "category", "description")
TITLE_REPEATS = 2
IDENTIFIER_ATTRIBUTES = frozenset({
    "sku", "mpn", "gtin", "ean", "upc", "isbn", "asin", "model", "model_number", "model_no", "article_number",
    "part_number", "style_number",
})
"""Attribute keys whose (string or integer) values are indexed with the text."""

AVERAGE_LENGTH = 40.0
"""Typical product text length in tokens: the ``avgdl`` of BM25's length normalisation (title + description)."""

BM25 = qe.Bm25(qe.Bm25Config(k=1.2, b=0.75, avg_len=AVERAGE_LENGTH, tokenizer=qe.TokenizerType.Word,
                              lowercase=True, ascii_folding=True))


@dataclass(frozen=True)
class Sparse:
    """A sparse vector: parallel lists of term ids and weights."""

    indices: list[int]
    values: list[float]

    def __bool__(self) -> bool:
        return bool(self.indices)

    @functools.cached_property
    def terms(self) -> frozenset[int]:
        """Its term ids as a set (worked out once: `covers` asks it of every candidate)."""
        return frozenset(self.indices)


_WORD_KEYS = frozenset({*TEXT_FIELDS, "attributes", GENERATED_FIELD})
"""The top-level payload keys `lexical_text` reads."""


def lexical_text(payload: Mapping[str, Any]) -> str:
    """The text a product's lexical vector is built from (empty when it has none)."""
    parts = [str(payload[name]) for name in TEXT_FIELDS if isinstance(payload.get(name), str)]
    if isinstance(payload.get("title"), str):
        parts += [str(payload["title"])] * (TITLE_REPEATS - 1)
    attributes = payload.get("attributes")
    if isinstance(attributes, Mapping):
        for key, value in attributes.items():
            if str(key).lower() in IDENTIFIER_ATTRIBUTES and isinstance(value, str | int) \
                    and not isinstance(value, bool):
                parts.append(str(value))
    generated = payload.get(GENERATED_FIELD)
    if isinstance(generated, Mapping) and generated.get("source") == GENERATED_SOURCE \
            and isinstance(generated.get("description"), str):
        parts.append(generated["description"])
    return " ".join(parts)


def reads_words(keys: Iterable[str]) -> bool:
    """Whether setting these top-level payload keys can change a product's lexical text (`lexical_text`)."""
    return any(key in _WORD_KEYS for key in keys)


def document_vector(payload: Mapping[str, Any]) -> Sparse:
    """The lexical vector stored with a product (empty when its text has no token)."""
    text = lexical_text(payload)
    if not text:
        return Sparse([], [])
    vector = BM25.embed_document(text)
    return Sparse(list(vector.indices), list(vector.values))


def query_vector(text: str) -> Sparse:
    """The lexical vector of a query text (empty when it has no token, e.g. only punctuation)."""
    vector = BM25.embed_query(text)
    return Sparse(list(vector.indices), list(vector.values))


def covers(query: Sparse, payload: Mapping[str, Any]) -> bool:
    """Whether a product's text holds every word of a query (as the lexical index tokenizes both)."""
    if not query:
        return False
    terms = payload.derived(_TERMS, _document_terms) if isinstance(payload, FrozenDict) \
        else _document_terms(payload)  # a frozen payload keeps its words: worked out once per product
    return query.terms <= terms


_TERMS = "lexical_terms"


def _document_terms(payload: Mapping[str, Any]) -> frozenset[int]:
    return _terms(lexical_text(payload))


@functools.lru_cache(maxsize=1 << 15)
def _terms(text: str) -> frozenset[int]:
    """The term ids of a text (cached: the same products come back across searches)."""
    return frozenset(BM25.embed_document(text).indices) if text else frozenset()

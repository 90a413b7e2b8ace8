"""Incremental state: the content hashes kept with every indexed product.

Each point's payload holds, under `store.protocol.STATE_KEY`::

    {"v": 1, "text": sha256(encoder name, embedding text) or null,
             "image": sha256(encoder name, image file bytes) or null,
             "payload": sha256(canonical JSON of the product),
             "tags": fingerprint of the tagger that tagged it (`indexer.tagging.Tagger`); absent: not tagged,
             "generated": text_hash of the text the text vector was embedded from when `vitrine enrich`
                          added a generated description to it (`api.enrich`); absent: not enriched}

The text and image hashes describe the vectors stored in the same point: they are only ever written in
the same store operation as those vectors (or as a payload update that keeps both the vectors and these
two hashes), so after a crash at any moment a hash never vouches for a vector that is not there. The tags
hash is written with the tags, in the same way: a product whose stored tags hash differs from the current
tagger's fingerprint (the vocabulary changed, or tagging was turned on or off) gets its payload rewritten
with tags computed from its stored image vector, without decoding the image again.

``generated`` marks a text vector that also embeds a generated description (``vitrine enrich``); ``text`` still
hashes the catalog text alone, so an unchanged catalog row leaves the enriched product as it is. When the row
changes in any way, the indexer rewrites the product from the catalog (payload without ``generated``) and
embeds its text again rather than keeping the enriched vector; the product is thin again, and the next
``vitrine enrich`` redoes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from store.lexical import LEXICAL_VERSION
from store.protocol import STATE_KEY, VectorStore

logger = logging.getLogger(__name__)

STATE_VERSION = 1


def text_hash(text: str, *, encoder: str) -> str | None:
    """Hash of the text a product's text vector is embedded from; None when there is no text."""
    if not text:
        return None
    digest = hashlib.sha256(encoder.encode() + b"\0" + text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def image_hash(data: bytes, *, encoder: str) -> str:
    """Hash of the image file a product's image vector is embedded from."""
    return hashlib.sha256(encoder.encode() + b"\0" + data).hexdigest()


def payload_hash(payload: Mapping[str, Any]) -> str:
    """Hash of a product's payload (canonical JSON: sorted keys, no whitespace) and of the version of the lexical
    vector the store derives from it (`store.lexical.LEXICAL_VERSION`): when that changes, or for products stored
    before the lexical index existed, every payload is written again, which rebuilds its lexical vector."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"lexical-v{LEXICAL_VERSION}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class ContentHashes:
    """What a stored product was built from."""

    text: str | None
    image: str | None
    payload: str
    tags: str | None = None
    """Fingerprint of the tagger whose tags the payload holds (None: not tagged)."""
    generated: str | None = None
    """Hash of the catalog text plus generated description the text vector embeds (None: not enriched)."""

    def as_payload(self) -> dict[str, Any]:
        """The value stored under `STATE_KEY` (``tags`` only when tagged: untagged state reads as before)."""
        value: dict[str, Any] = {"v": STATE_VERSION, "text": self.text, "image": self.image,
                                 "payload": self.payload}
        if self.tags is not None:
            value["tags"] = self.tags
        if self.generated is not None:
            value["generated"] = self.generated
        return value

    @classmethod
    def from_payload(cls, value: Any) -> ContentHashes | None:
        """Read a value written by `as_payload`; None when absent or not understood (product redone)."""
        if not isinstance(value, Mapping) or value.get("v") != STATE_VERSION:
            return None
        text, image, payload, tags = value.get("text"), value.get("image"), value.get("payload"), value.get("tags")
        generated = value.get("generated")
        if not isinstance(payload, str) or \
                not all(v is None or isinstance(v, str) for v in (text, image, tags, generated)):
            return None
        return cls(text=text, image=image, payload=payload, tags=tags, generated=generated)


def load_state(store: VectorStore, collection: str) -> dict[str, ContentHashes | None]:
    """Product id -> stored hashes (None for a product without readable state) of every stored product."""
    state: dict[str, ContentHashes | None] = {}
    for point in store.scroll(collection, fields=["id", STATE_KEY]):
        state[point.product_id] = ContentHashes.from_payload(point.payload.get(STATE_KEY))
    logger.debug("loaded the state of %d products of %r", len(state), collection)
    return state

"""Encode query parts into unit vectors of the encoder's shared space, and combine them by weight.

A query is a list of parts (text, an image, a catalog product's vector), each with a weight. Its vector is
the normalised weighted sum of the parts' unit embeddings (`combine`): with two parts of weight 1 it is the
point halfway (in angle) between them, a weight of 2 pulls twice as hard, and a negative weight pushes the
query away from that part ("sneakers, not leather": ``[("sneakers", 1), ("leather", -0.5)]``).

Embeddings of texts and images are kept in an LRU cache (`QueryEncoder`): shoppers repeat queries, and a
text embedding costs 10+ ms of model time that a cache hit skips. The misses of concurrent searches can go
through a `search.batching.MicroBatcher` (one encoder call for many queries) instead of one call each.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from common.errors import InvalidQuery
from common.metrics import ENCODE_BATCH_SIZE, ENCODE_QUEUE_WAIT, ENCODE_SECONDS, cache_lookup
from embed.protocol import Encoder
from search.batching import MicroBatcher

_EPS = 1e-6


@dataclass(frozen=True)
class Part:
    """One embedded part of a query."""

    vector: NDArray[np.float32]
    """Unit vector of the part."""
    weight: float
    kind: str
    """"text" or "image" (a product's stored vector counts as an image)."""
    text: str | None = None


def combine(parts: Sequence[Part]) -> NDArray[np.float32]:
    """The unit vector along the weighted sum of the parts' vectors.

    Raises:
        InvalidQuery: no part with a positive weight, or the parts cancel out.
    """
    if not any(part.weight > 0 for part in parts):
        raise InvalidQuery("a query needs at least one part with a positive weight; negative parts only say "
                           "what to avoid")
    total = np.zeros(parts[0].vector.shape, dtype=np.float64)
    for part in parts:
        total += part.weight * np.asarray(part.vector, dtype=np.float64)
    norm = float(np.linalg.norm(total))
    if norm < _EPS:
        raise InvalidQuery("the parts of the query point in opposite directions and cancel out; change their "
                           "weights or search with fewer parts")
    unit: NDArray[np.float32] = (total / norm).astype(np.float32)
    return unit


@dataclass(frozen=True)
class CacheStats:
    """How the query cache has done since the service started."""

    capacity: int
    size: int
    hits: int
    misses: int

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (0 before any)."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class QueryEncoder:
    """Embeds query texts and images through an encoder, with an LRU cache of the results (thread-safe).

    Args:
        encoder: the collection's encoder.
        cache_size: embeddings kept; 0 turns the cache off.
        batcher: encodes the cache's misses in batches with other threads' (None: one encoder call per miss,
            in the caller's thread). `close` closes it.
    """

    def __init__(self, encoder: Encoder, *, cache_size: int, batcher: MicroBatcher | None = None) -> None:
        self.encoder = encoder
        self.batcher = batcher
        self._capacity = max(0, cache_size)
        self._cache: OrderedDict[tuple[str, str], NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = 0

    def text(self, text: str) -> NDArray[np.float32]:
        """The unit embedding of a query text."""
        if self.batcher is not None:
            batcher = self.batcher
            return self._cached(("text", text), lambda: batcher.text(text), batched=True)
        return self._cached(("text", text), lambda: self.encoder.embed_texts([text])[0])

    def image(self, image: Image.Image) -> NDArray[np.float32]:
        """The unit embedding of a query image (cached by a hash of its pixels)."""
        digest = hashlib.blake2b(image.tobytes(), digest_size=16)
        digest.update(f"{image.mode}{image.size}".encode())
        if self.batcher is not None:
            batcher = self.batcher
            return self._cached(("image", digest.hexdigest()), lambda: batcher.image(image), batched=True)
        return self._cached(("image", digest.hexdigest()), lambda: self.encoder.embed_images([image])[0])

    def stats(self) -> CacheStats:
        """Capacity, size, hits and misses so far."""
        with self._lock:
            return CacheStats(self._capacity, len(self._cache), self._hits, self._misses)

    def close(self) -> None:
        """Stop the batcher, if any (queries still queued fail with `common.errors.BackendUnavailable`)."""
        if self.batcher is not None:
            self.batcher.close()

    async def atext(self, text: str) -> NDArray[np.float32]:
        """`text` for an event loop: a cache hit at once, a miss awaited without blocking the loop (from the
        batcher, with other searches' texts; without one, encoded in a worker thread)."""
        key = ("text", text)
        vector = self._lookup(key)
        if vector is not None:
            return vector
        if self.batcher is not None:
            raw = await asyncio.wrap_future(self.batcher.submit("text", text))
        else:
            raw = await asyncio.to_thread(self._encode_inline, key, lambda: self.encoder.embed_texts([text])[0], 0.0)
        return self._keep(key, raw)

    def _cached(self, key: tuple[str, str], embed: Callable[[], NDArray[np.float32]], *,
                batched: bool = False) -> NDArray[np.float32]:
        """The cached vector of ``key``, or ``embed()`` made a unit vector and kept (most recent last).

        Records the lookup, and for a miss encoded inline the wait before the encoder call (this lock), the
        batch size (1) and the encoder call's time (`common.metrics`); a ``batched`` miss is recorded by the
        batcher.
        """
        asked = time.perf_counter()
        vector = self._lookup(key)
        if vector is not None:
            return vector
        # outside the lock: a batched miss waits for its batch, an inline one for the model
        raw = embed() if batched else self._encode_inline(key, embed, time.perf_counter() - asked)
        return self._keep(key, raw)

    def _lookup(self, key: tuple[str, str]) -> NDArray[np.float32] | None:
        """The cached vector of ``key`` (made the most recent), or None; the lookup is counted."""
        with self._lock:
            vector = self._cache.get(key)
            if vector is not None:
                self._cache.move_to_end(key)
                self._hits += 1
            else:
                self._misses += 1
        cache_lookup("query_embedding", hit=vector is not None)
        return vector

    @staticmethod
    def _encode_inline(key: tuple[str, str], embed: Callable[[], NDArray[np.float32]],
                       waited: float) -> NDArray[np.float32]:
        """``embed()``, recorded as a batch of one after ``waited`` seconds in the queue."""
        ENCODE_QUEUE_WAIT.observe(waited)
        ENCODE_BATCH_SIZE.labels(key[0]).observe(1)
        with ENCODE_SECONDS.labels(key[0]).time():
            return embed()

    def _keep(self, key: tuple[str, str], raw: NDArray[np.float32]) -> NDArray[np.float32]:
        """``raw`` as a unit vector, kept in the cache (read-only: every later hit shares it)."""
        vector = _unit(raw)
        if self._capacity:
            vector.setflags(write=False)
            with self._lock:
                self._cache[key] = vector
                self._cache.move_to_end(key)
                while len(self._cache) > self._capacity:
                    self._cache.popitem(last=False)
        return vector


def _unit(vector: NDArray[np.float32]) -> NDArray[np.float32]:
    out: NDArray[np.float32] = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(out))
    return out / norm if norm > _EPS else out

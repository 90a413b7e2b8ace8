"""An LRU cache of re-rank scores, and `CachedReranker`, which sends only the uncached candidates to its model.

A score is keyed by (model name, query, product): the query key hashes the query text and the query image
(its ``image_key`` or, without one, its pixels); the product key is the candidate's ``image_key`` (or its
pixels, or nothing when it has no image) with a hash of its text, so that an edited title or a new image is
scored again.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from common.errors import RerankFailed
from common.metrics import cache_lookup
from rerank.imaging import pixel_digest
from rerank.protocol import Candidate, Reranker, RerankQuery, check_candidates

CacheKey = tuple[str, str, str]


def _text_digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def query_key(query: RerankQuery) -> str:
    """The cache key of a query: its stripped text and its image's key or pixel hash."""
    image = query.image_key or (pixel_digest(query.image) if query.image is not None else "-")
    return f"{_text_digest(query.words or '')}:{image}"


def candidate_key(candidate: Candidate) -> str:
    """The cache key of a candidate: its image's key (or pixel hash) and a hash of its text."""
    image = candidate.image_key or (pixel_digest(candidate.image) if candidate.image is not None else "-")
    return f"{image}:{_text_digest(candidate.text)}"


class ScoreCache:
    """A thread-safe LRU map of (model, query key, candidate key) to a score.

    Args:
        capacity: most scores kept; 0 keeps none.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"score cache capacity must be 0 or more, got {capacity}")
        self._capacity = capacity
        self._items: OrderedDict[CacheKey, float] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> float | None:
        """The score under ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            value = self._items.get(key)
            cache_lookup("rerank_score", hit=value is not None)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: CacheKey, value: float) -> None:
        """Keep ``value`` under ``key``, dropping the least recently used score beyond the capacity."""
        if self._capacity == 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict[str, int]:
        """Size, capacity, hits and misses."""
        return {"size": len(self._items), "capacity": self._capacity, "hits": self.hits, "misses": self.misses}


class CachedReranker:
    """A `Reranker` that answers from a `ScoreCache` and asks ``inner`` only about the candidates it lacks.

    Args:
        inner: the re-ranker that computes scores.
        cache: the cache (shared or own).
    """

    def __init__(self, inner: Reranker, cache: ScoreCache) -> None:
        self.inner = inner
        self.cache = cache

    @property
    def name(self) -> str:
        """The inner re-ranker's name."""
        return self.inner.name

    def load(self) -> None:
        """Load the inner re-ranker."""
        self.inner.load()

    def score(self, query: RerankQuery, candidates: Sequence[Candidate], *,
              deadline: float | None = None) -> list[float]:
        """Cached scores, and the inner re-ranker's for the rest (in one call); same errors as the inner one."""
        items = check_candidates(candidates)
        asked = query_key(query)
        keys = [(self.inner.name, asked, candidate_key(item)) for item in items]
        scores = [self.cache.get(key) for key in keys]
        missing = [index for index, value in enumerate(scores) if value is None]
        if missing:
            fresh = self.inner.score(query, [items[index] for index in missing], deadline=deadline)
            if len(fresh) != len(missing):
                raise RerankFailed(f"re-ranker {self.inner.name!r} returned {len(fresh)} scores for "
                                   f"{len(missing)} candidates")
            for index, value in zip(missing, fresh, strict=True):
                scores[index] = value
                self.cache.put(keys[index], value)
        return [float(value) for value in scores if value is not None]

    def describe(self) -> dict[str, Any]:
        """The inner re-ranker's description, with the cache's size, capacity, hits and misses."""
        return {**self.inner.describe(), "cache": self.cache.stats()}

"""Prometheus metrics: the objects every layer records into, on one registry that ``GET /metrics`` exposes.

Every name starts with ``vitrine_``; labels take values from small fixed sets (route templates, not paths), so
the number of series stays bounded. Layers record at one point each: the API middleware (requests), the query
encoder (encoding, query cache), the search service (store calls), the re-ranking and generation services,
the indexer (rows by outcome). docs/observability.md lists them.

The registry is module-level on purpose: a process has one ``/metrics`` and counters must survive app
rebuilds; tests read differences, never absolute values.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Buckets (seconds) for work that takes milliseconds: requests, encoding, store calls."""
_SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
"""Buckets (seconds) for model work that takes seconds: re-ranking, generation."""

HTTP_REQUESTS = Counter("vitrine_http_requests", "HTTP requests answered, by route template and status.",
                        ["method", "route", "status"], registry=REGISTRY)
HTTP_DURATION = Histogram("vitrine_http_request_duration_seconds", "Time to answer an HTTP request.",
                          ["method", "route"], buckets=_FAST, registry=REGISTRY)
HTTP_IN_FLIGHT = Gauge("vitrine_http_requests_in_flight", "HTTP requests being answered now.", registry=REGISTRY)

ENCODE_BATCH_SIZE = Histogram("vitrine_encode_batch_size", "Inputs per encoder call (queries: as many as "
                              "were micro-batched together).",
                              ["kind"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=REGISTRY)
ENCODE_QUEUE_WAIT = Histogram("vitrine_encode_queue_wait_seconds", "Time a query waited before its encoder call "
                              "could start (micro-batching: from enqueue to its batch's start; else the query "
                              "cache's lock).",
                              buckets=_FAST, registry=REGISTRY)
ENCODE_SECONDS = Histogram("vitrine_encode_seconds", "Time of one encoder call.", ["kind"], buckets=_FAST,
                           registry=REGISTRY)

CACHE_REQUESTS = Counter("vitrine_cache_requests", "Cache lookups by cache (query_embedding, rerank_score, "
                         "generated) and result (hit, miss).", ["cache", "result"], registry=REGISTRY)

STORE_SECONDS = Histogram("vitrine_store_seconds", "Time of one call to the vector store, by operation.",
                          ["operation"], buckets=_FAST, registry=REGISTRY)

RERANK_SECONDS = Histogram("vitrine_rerank_seconds", "Time spent re-ranking one search (budget included).",
                           buckets=_SLOW, registry=REGISTRY)
RERANK_FAILURES = Counter("vitrine_rerank_failures", "Re-rankings that fell back to first-stage order, by reason "
                          "(timeout, budget, error).", ["reason"], registry=REGISTRY)

GENERATE_SECONDS = Histogram("vitrine_generate_seconds", "Time of one generation job (cache hits excluded).",
                             ["backend"], buckets=_SLOW, registry=REGISTRY)
GENERATE_FAILURES = Counter("vitrine_generate_failures", "Generation jobs that failed or ran out of time.",
                            ["backend"], registry=REGISTRY)

INGEST_ROWS = Counter("vitrine_ingest_rows", "Catalog rows by outcome (indexed, updated, unchanged, rejected, "
                      "pruned), in the process that ran the index job.", ["outcome"], registry=REGISTRY)

INGEST_OUTCOMES = ("indexed", "updated", "unchanged", "rejected", "pruned")
"""The outcomes of a catalog row (and of a stored product, for ``pruned``)."""


def cache_lookup(cache: str, *, hit: bool) -> None:
    """Count one lookup in ``cache`` (query_embedding, rerank_score, generated)."""
    CACHE_REQUESTS.labels(cache, "hit" if hit else "miss").inc()


_T = TypeVar("_T")


class _TimedCalls:
    """Forwards attribute access to ``inner``; its public methods are timed into ``histogram`` by name."""

    def __init__(self, inner: Any, histogram: Histogram) -> None:
        self._inner = inner
        self._histogram = histogram
        self._timed: dict[str, tuple[Any, Callable[..., Any]]] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name.startswith("_") or not callable(attribute):
            return attribute
        known = self._timed.get(name)
        if known is not None and known[0] == attribute:  # the same method (bound methods compare equal)
            return known[1]
        child = self._histogram.labels(name)

        @functools.wraps(attribute)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                child.observe(time.perf_counter() - started)

        self._timed[name] = (attribute, timed)  # wrapped once: a search makes half a dozen calls
        return timed


def timed_calls(inner: _T, histogram: Histogram) -> _T:
    """``inner`` seen through a proxy that times each call of a public method into ``histogram``, labelled with
    the method's name (the label set is bounded by the object's interface).

    Used once per layer, e.g. the search service times its store as ``timed_calls(store, STORE_SECONDS)``.
    """
    return cast(_T, _TimedCalls(inner, histogram))


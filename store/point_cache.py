"""The embedded store's point cache: the payloads and dense vectors of recently read products, as Python and
numpy objects.

A search finds up to ``search.candidates`` products per index and needs each one's payload and its exact
similarity on both indices. qdrant-edge builds every payload it returns as Python objects again on each read
(about 22 µs per product on the 2-core VM), and an exact-score call costs a request of its own; together they
were two thirds of a search's time (see docs/benchmarks.md, "Serving at load"). The same products come back
across searches (a shop's catalog has its popular corners), so the store asks the engine for ids and scores
only, takes the payloads it has here, scores the products it has here with numpy, and reads the rest in one
call.

Correctness: the embedded engine is held by one process (its write-ahead log is locked), and every write of
that process goes through `store.edge_backend.EdgeStore`, which makes the cache forget the written products
after the engine has them. A read that missed the cache and raced a write must not put the old data back:
each write bumps a generation, and a read only keeps what it read when no write happened since it began.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from store.frozen import FrozenDict


@dataclass(frozen=True)
class CachedPoint:
    """One product as read from the engine: its payload and its dense vectors (unit length, as stored)."""

    payload: FrozenDict
    vectors: Mapping[str, NDArray[np.float32]]


class PointCache:
    """A thread-safe LRU of points by id, at most ``capacity`` of them (0: off).

    Ids are the point UUIDs' 128-bit integers (``uuid.UUID.int``): hashing a ``uuid.UUID`` runs Python code,
    and a search looks up thousands of ids.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"point cache capacity must be >= 0; got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[int, CachedPoint] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def generation(self) -> int:
        """Bumped by every write; take it before reading the engine, give it to `put`."""
        return self._generation

    def get(self, point_ids: Sequence[int]) -> tuple[dict[int, CachedPoint], list[int]]:
        """The cached points among ``point_ids``, and the ids missing (in the order asked).

        The cached payloads are shared, and frozen (`store.frozen`): a caller cannot change one for the others.
        """
        found: dict[int, CachedPoint] = {}
        if not self.capacity:
            return found, list(point_ids)
        missing: list[int] = []
        with self._lock:
            items = self._items
            for pid in point_ids:
                point = items.get(pid)
                if point is None:
                    missing.append(pid)
                else:
                    items.move_to_end(pid)
                    found[pid] = point
        return found, missing

    def put(self, points: Mapping[int, CachedPoint], *, generation: int) -> None:
        """Keep ``points`` (read from the engine), unless a write happened since ``generation`` was taken
        (what was read may be older than the engine's data now)."""
        if not self.capacity or not points:
            return
        with self._lock:
            if generation != self._generation:
                return
            items = self._items
            for pid, point in points.items():
                items[pid] = point
                items.move_to_end(pid)
            while len(items) > self.capacity:
                items.popitem(last=False)

    def forget(self, point_ids: Iterable[int] | None = None) -> None:
        """Drop the points ``point_ids`` (all of them when None): they were just written."""
        with self._lock:
            self._generation += 1
            if point_ids is None:
                self._items.clear()
            else:
                for pid in point_ids:
                    self._items.pop(pid, None)

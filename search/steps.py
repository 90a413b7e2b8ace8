"""A search's store reads, kept apart from its logic (sans-IO), so one logic runs on a sync or an async store.

`search.service.SearchService` writes a search as a generator: it yields the store reads one phase needs (the
index searches, then the missing exact scores, ...), each a `StoreCall`, receives their results in the same
order, and returns the response. `run` drives it with a sync `store.protocol.VectorStore`, one read after the
other; `run_async` drives it with a `store.protocol.AsyncVectorReader` (an async Qdrant client): the reads of a
phase go out together and no thread waits on the network, while the logic between phases runs in a worker
thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeAlias, TypeVar

T = TypeVar("T")

StoreCall: TypeAlias = tuple[str, dict[str, Any]]
"""One read: a store method's name and its keyword arguments (the driver adds the collection)."""

Steps: TypeAlias = Generator[list[StoreCall], list[Any], T]
"""A search: yields the reads of each phase (never an empty list), is sent their results, returns the answer."""


def run(steps: Steps[T], call: Callable[[str, dict[str, Any]], Any], *,
        gate: AbstractContextManager[Any] | None = None) -> T:
    """Drive ``steps`` to its answer, making each read with ``call(name, kwargs)`` in turn; the search's own
    work between the reads holds ``gate`` (a semaphore bounding the searches that compute at once), the reads
    do not."""
    finished, value = _advance(steps, None, gate)
    while not finished:
        finished, value = _advance(steps, [call(name, kwargs) for name, kwargs in value], gate)
    answer: T = value
    return answer


async def run_async(steps: Steps[T], call: Callable[[str, dict[str, Any]], Awaitable[Any]], *,
                    gate: AbstractContextManager[Any] | None = None) -> T:
    """Drive ``steps`` to its answer: each phase's reads concurrently with ``call(name, kwargs)``, the search's
    own work between them in a worker thread (`asyncio.to_thread`), holding ``gate`` as `run` does."""
    finished, value = await asyncio.to_thread(_advance, steps, None, gate)
    while not finished:
        results = await asyncio.gather(*(call(name, kwargs) for name, kwargs in value))
        finished, value = await asyncio.to_thread(_advance, steps, list(results), gate)
    answer: T = value
    return answer


def _advance(steps: Steps[Any], results: list[Any] | None,
             gate: AbstractContextManager[Any] | None) -> tuple[bool, Any]:
    """Resume ``steps`` (started when ``results`` is None), holding ``gate``: ``(False, next reads)`` or
    ``(True, answer)``.

    A `StopIteration` cannot cross a thread's future, hence the flag.
    """
    with gate or nullcontext():
        try:
            return False, next(steps) if results is None else steps.send(results)
        except StopIteration as done:
            return True, done.value

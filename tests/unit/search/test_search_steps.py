"""The drivers of a search's steps (`search.steps`): sync, one read after the other; async, each phase's reads
at once, the logic between phases in a worker thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from search.steps import Steps, StoreCall, run, run_async


def two_phases(log: list[str]) -> Steps[str]:
    """Reads ``a`` and ``b``, then ``c`` with what they gave; answers with all three."""
    log.append(f"start in {threading.current_thread().name}")
    first: list[Any] = yield [("a", {"x": 1}), ("b", {"x": 2})]
    log.append(f"resumed in {threading.current_thread().name}")
    second: list[Any] = yield [("c", {"seen": first})]
    return f"{first}+{second}"


def test_run_makes_each_read_in_turn_and_returns_the_answer() -> None:
    made: list[StoreCall] = []

    def call(name: str, kwargs: dict[str, Any]) -> Any:
        made.append((name, kwargs))
        return f"{name}{kwargs.get('x', '')}"

    assert run(two_phases([]), call) == "['a1', 'b2']+['c']"
    assert made == [("a", {"x": 1}), ("b", {"x": 2}), ("c", {"seen": ["a1", "b2"]})]


def test_run_of_steps_that_read_nothing() -> None:
    def no_reads() -> Steps[int]:
        if False:  # a generator that returns at once
            yield []
        return 7

    assert run(no_reads(), lambda name, kwargs: pytest.fail("no read expected")) == 7


def test_run_async_sends_a_phase_s_reads_together() -> None:
    """``a`` waits until ``b`` has started: reads made one after the other would never finish."""
    log: list[str] = []

    async def main() -> str:
        b_started = asyncio.Event()

        async def call(name: str, kwargs: dict[str, Any]) -> Any:
            if name == "a":
                await asyncio.wait_for(b_started.wait(), timeout=10)
            if name == "b":
                b_started.set()
            return f"{name}{kwargs.get('x', '')}"

        return await run_async(two_phases(log), call)

    assert asyncio.run(main()) == "['a1', 'b2']+['c']"
    assert log[0].startswith("start in ") and log[1].startswith("resumed in ")
    assert all("MainThread" not in line for line in log), log  # the logic ran in worker threads, off the loop


def test_run_async_passes_a_read_s_error_on() -> None:
    async def call(name: str, kwargs: dict[str, Any]) -> Any:
        if name == "b":
            raise LookupError("no such collection 'shop'")
        return name

    with pytest.raises(LookupError, match="shop"):
        asyncio.run(run_async(two_phases([]), call))


def test_run_async_passes_the_logic_s_error_on() -> None:
    def failing() -> Steps[str]:
        yield [("a", {})]
        raise ValueError("weights must be >= 0")

    async def call(name: str, kwargs: dict[str, Any]) -> Any:
        return name

    with pytest.raises(ValueError, match="weights"):
        asyncio.run(run_async(failing(), call))


def held(gate: threading.Semaphore) -> bool:
    if gate.acquire(blocking=False):
        gate.release()
        return False
    return True


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_the_gate_is_held_by_the_logic_not_by_the_reads(driver: str) -> None:
    gate = threading.Semaphore(1)
    log: list[str] = []

    def steps() -> Steps[str]:
        log.append(f"logic {held(gate)}")
        yield [("a", {}), ("b", {})]
        log.append(f"logic {held(gate)}")
        return "done"

    def call(name: str, kwargs: dict[str, Any]) -> Any:
        log.append(f"read {held(gate)}")
        return name

    async def acall(name: str, kwargs: dict[str, Any]) -> Any:
        return call(name, kwargs)

    answer = run(steps(), call, gate=gate) if driver == "sync" else asyncio.run(run_async(steps(), acall, gate=gate))
    assert answer == "done"
    assert log == ["logic True", "read False", "read False", "logic True"]
    assert not held(gate)  # released at the end


def test_the_gate_is_released_when_the_logic_fails() -> None:
    gate = threading.Semaphore(1)

    def failing() -> Steps[str]:
        yield [("a", {})]
        raise ValueError("weights must be >= 0")

    with pytest.raises(ValueError, match="weights"):
        run(failing(), lambda name, kwargs: name, gate=gate)
    assert not held(gate)

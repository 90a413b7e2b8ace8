"""`common.metrics`: the registry's names, and the proxy that times an object's calls by method name."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from common.metrics import REGISTRY, timed_calls


class Store:
    """Something with methods and a plain attribute, like a store."""

    limit = 7

    def search(self, term: str, *, k: int) -> list[str]:
        return [term] * k

    def fail(self) -> None:
        raise KeyError("missing")


def test_each_public_method_call_is_timed_under_its_name() -> None:
    registry = CollectorRegistry()
    seconds = Histogram("t_store_seconds", "test", ["operation"], registry=registry)
    store = timed_calls(Store(), seconds)
    assert store.search("x", k=2) == ["x", "x"] and store.limit == 7
    store.search("y", k=1)
    with pytest.raises(KeyError, match="missing"):  # errors pass through, and the call is timed
        store.fail()
    assert registry.get_sample_value("t_store_seconds_count", {"operation": "search"}) == 2
    assert registry.get_sample_value("t_store_seconds_count", {"operation": "fail"}) == 1
    assert registry.get_sample_value("t_store_seconds_count", {"operation": "limit"}) is None


def test_the_wrapped_methods_are_kept_but_a_replaced_method_is_called() -> None:
    """The proxy wraps each method once (a search calls the store's a few times each); a method replaced on the
    object afterwards (as tests patch a store) is the one called, and timed."""
    registry = CollectorRegistry()
    seconds = Histogram("t_store_seconds", "test", ["operation"], registry=registry)
    inner = Store()
    store = timed_calls(inner, seconds)
    assert store.search is store.search and store.search("x", k=1) == ["x"]
    inner.search = lambda term, *, k: ["replaced"]  # type: ignore[method-assign]
    assert store.search("x", k=1) == ["replaced"]
    assert registry.get_sample_value("t_store_seconds_count", {"operation": "search"}) == 2


def test_every_metric_is_named_vitrine_and_the_process_is_described() -> None:
    names = {metric.name for metric in REGISTRY.collect()}
    ours = {name for name in names if name.startswith("vitrine_")}
    assert {"vitrine_http_requests", "vitrine_store_seconds", "vitrine_ingest_rows"} <= ours
    assert "process_cpu_seconds" in names and "python_info" in names
    assert all(name.startswith(("vitrine_", "process_", "python_")) for name in names), names

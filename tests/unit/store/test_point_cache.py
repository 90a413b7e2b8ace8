"""The embedded store's point cache (`store.point_cache`): the LRU alone, and `EdgeStore` with it on the real engine.

With the cache on, every result must be what the engine alone gives (cache off): the same ids, order, scores and
payloads, and every write seen by the next read.
"""

from __future__ import annotations

import copy
import json
import pickle
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from numpy.typing import NDArray

from common.settings import StoreSettings
from store.edge_backend import EdgeStore
from store.edge_collections import EdgeCollection
from store.frozen import freeze
from store.point_cache import CachedPoint, PointCache
from store.protocol import IMAGE, TEXT, Boost, Filter, Match, PointWrite, Range, StoredPoint
from tests.unit.store.conftest import unit_vectors
from tests.unit.store.test_conformance import DIM, ENC, catalog

NAME = "products"
N = 60


def point(i: int) -> CachedPoint:
    """A cached point whose payload tells which one it is."""
    return CachedPoint(freeze({"id": f"p{i}"}), {IMAGE: np.full(4, i, dtype=np.float32)})


def ids_of(found: dict[int, CachedPoint]) -> list[int]:
    return [int(p.payload["id"][1:]) for p in found.values()]


# -- PointCache alone ----------------------------------------------------------------------------------------------

def test_the_least_recently_used_points_are_dropped_first() -> None:
    cache = PointCache(3)
    cache.put({1: point(1), 2: point(2), 3: point(3)}, generation=cache.generation)
    assert len(cache) == 3
    cache.get([1])  # 1 is now the most recent: 2 is the oldest
    cache.put({4: point(4)}, generation=cache.generation)
    found, missing = cache.get([1, 2, 3, 4])
    assert sorted(found) == [1, 3, 4] and missing == [2]
    assert ids_of(found) == [1, 3, 4]  # each point is the one put under its id
    cache.put({5: point(5), 6: point(6)}, generation=cache.generation)  # 1, 3, 4 were read in that order
    assert len(cache) == 3
    assert sorted(cache.get([1, 3, 4, 5, 6])[0]) == [4, 5, 6]


def test_get_returns_the_found_and_the_missing_in_the_order_asked() -> None:
    cache = PointCache(10)
    cache.put({i: point(i) for i in (2, 4, 6)}, generation=cache.generation)
    found, missing = cache.get([9, 6, 1, 2, 7, 4])
    assert list(found) == [6, 2, 4]
    assert missing == [9, 1, 7]
    assert found[6] is cache.get([6])[0][6]  # shared, not copied: EdgeStore copies what it hands out


def test_capacity_zero_caches_nothing() -> None:
    cache = PointCache(0)
    cache.put({1: point(1)}, generation=cache.generation)
    assert len(cache) == 0
    assert cache.get([1, 2]) == ({}, [1, 2])


def test_forget_drops_points_and_bumps_the_generation() -> None:
    cache = PointCache(10)
    cache.put({i: point(i) for i in range(5)}, generation=cache.generation)
    before = cache.generation
    cache.forget([1, 3, 99])  # an id never cached is no error
    assert cache.generation == before + 1
    assert sorted(cache.get(range(5))[0]) == [0, 2, 4]
    cache.forget()
    assert cache.generation == before + 2
    assert len(cache) == 0
    cache.forget([])  # even a write of nothing counts as a write
    assert cache.generation == before + 3


def test_a_read_that_raced_a_write_keeps_nothing() -> None:
    cache = PointCache(10)
    cache.put({1: point(1)}, generation=cache.generation)
    taken = cache.generation  # a read begins ...
    cache.forget([2])  # ... a write of another product happens meanwhile ...
    cache.put({2: point(2), 3: point(3)}, generation=taken)  # ... so what the read got may be stale
    assert cache.get([1, 2, 3]) == ({1: cache.get([1])[0][1]}, [2, 3])
    cache.put({2: point(2)}, generation=cache.generation)  # a read begun after the write is kept
    assert 2 in cache.get([2])[0]


def test_a_negative_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="-1"):
        PointCache(-1)


def test_threads_share_a_cache() -> None:
    cache = PointCache(50)
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            start.wait()
            for _ in range(2_000):
                ids = [int(i) for i in rng.integers(0, 200, size=8)]
                action = rng.integers(0, 10)
                if action < 5:
                    found, missing = cache.get(ids)
                    assert set(found) | set(missing) == set(ids)
                    assert all(found[i].payload["id"] == f"p{i}" for i in found)
                elif action < 9:
                    cache.put({i: point(i) for i in ids}, generation=cache.generation)
                else:
                    cache.forget(ids[:2] if action % 2 else None)
                assert len(cache) <= 50
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(cache) <= 50


# -- EdgeStore with the cache --------------------------------------------------------------------------------------

def opened_of(store: EdgeStore, name: str = NAME) -> EdgeCollection:
    """The store's opened collection (its shard and point cache)."""
    return store._collections.get(name)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[PointWrite]]:
    """A store folder holding ``catalog(N)`` (closed: copy it to use it)."""
    folder = tmp_path_factory.mktemp("point-cache") / "store"
    store = EdgeStore(folder, settings=StoreSettings())
    try:
        store.ensure_collection(NAME, encoder=ENC, dim=DIM)
        points = catalog(N)
        store.upsert(NAME, points)
    finally:
        store.close()
    return folder, points


@pytest.fixture
def pair(written: tuple[Path, list[PointWrite]], tmp_path: Path) -> Iterator[tuple[EdgeStore, EdgeStore]]:
    """The same data opened twice: with the cache off, and with it on (the default)."""
    off_dir, on_dir = tmp_path / "off", tmp_path / "on"
    shutil.copytree(written[0], off_dir)
    shutil.copytree(written[0], on_dir)
    off = EdgeStore(off_dir, settings=StoreSettings(point_cache=0))
    on = EdgeStore(on_dir, settings=StoreSettings())
    yield off, on
    off.close()
    on.close()


@pytest.fixture
def cached(pair: tuple[EdgeStore, EdgeStore]) -> EdgeStore:
    """The store with the cache on, every product in its cache (a search found them all)."""
    on = pair[1]
    on.search(NAME, vector=unit_vectors(1, DIM, seed=99)[0], using=IMAGE, limit=N)
    assert len(opened_of(on).points) == N
    return on


def assert_same(got: list[StoredPoint], want: list[StoredPoint]) -> None:
    """Same ids in the same order, scores within 1e-6, equal payloads and vectors."""
    assert [p.product_id for p in got] == [p.product_id for p in want]
    for g, w in zip(got, want, strict=True):
        assert (g.score is None) == (w.score is None)
        if w.score is not None:
            assert g.score == pytest.approx(w.score, abs=1e-6)
        assert g.payload == w.payload
        assert sorted(g.vectors) == sorted(w.vectors)
        for name, vector in w.vectors.items():
            np.testing.assert_allclose(g.vectors[name], vector, atol=1e-6)


def test_results_with_the_cache_equal_results_without_it(pair: tuple[EdgeStore, EdgeStore]) -> None:
    off, on = pair
    queries = unit_vectors(3, DIM, seed=123)
    shoes = Filter(must=(Match("category", "shoes"),))
    cheap = Filter(must=(Range("price", lte=120.0),), must_not=(Match("brand", "zeta"),))
    boosts = (Boost(Match("brand", "acme"), 0.3), Boost(Match("in_stock", True), -0.2))
    searches: list[dict[str, Any]] = [
        {"using": IMAGE, "limit": 10},
        {"using": TEXT, "limit": 25},
        {"using": IMAGE, "limit": 8, "filter": shoes},
        {"using": TEXT, "limit": 12, "filter": cheap},
        {"using": IMAGE, "limit": 10, "boosts": boosts},
        {"using": TEXT, "limit": 10, "filter": shoes, "boosts": boosts},
        {"using": IMAGE, "limit": 5, "with_vectors": True},
        {"using": IMAGE, "limit": 7, "exact": True},
    ]
    for _ in range(2):  # first with the cache filling, then from it
        for query in queries:
            for kwargs in searches:
                assert_same(on.search(NAME, vector=query, **kwargs), off.search(NAME, vector=query, **kwargs))
        for text, filter in (("product 7", None), ("product", shoes), ("product 12 13", cheap)):
            assert_same(on.lexical_search(NAME, text=text, limit=10, filter=filter),
                        off.lexical_search(NAME, text=text, limit=10, filter=filter))
        asked = ["p005", "absent", "p001", "p017", "p005", "p059"]
        for with_vectors in (False, True):
            assert_same(on.retrieve(NAME, asked, with_vectors=with_vectors),
                        off.retrieve(NAME, asked, with_vectors=with_vectors))
    assert len(opened_of(on).points) > 0
    assert len(opened_of(off).points) == 0


def test_scores_from_the_cache_equal_the_engines_exact_scores(pair: tuple[EdgeStore, EdgeStore]) -> None:
    off, on = pair
    everyone = [f"p{i:03d}" for i in range(N)] + ["absent"]
    query = unit_vectors(1, DIM, seed=5)[0] * 3.0  # not unit length: the engine normalizes it
    # a mix: some products cached by a retrieve, the rest scored by the engine in the same call
    on.retrieve(NAME, everyone[::3])
    assert 0 < len(opened_of(on).points) < N
    for using in (IMAGE, TEXT):
        mixed = on.score(NAME, vector=query, using=using, product_ids=everyone)
        exact = off.score(NAME, vector=query, using=using, product_ids=everyone)
        assert list(mixed) == list(exact)  # same products, in the order asked
        assert mixed == pytest.approx(exact, abs=1e-6)
    on.retrieve(NAME, everyone)  # now all of them from the cache
    assert len(opened_of(on).points) == N
    for using in (IMAGE, TEXT):
        cached = on.score(NAME, vector=query, using=using, product_ids=everyone)
        exact = off.score(NAME, vector=query, using=using, product_ids=everyone)
        assert list(cached) == list(exact)
        assert cached == pytest.approx(exact, abs=1e-6)
    without_text = {f"p{i:03d}" for i in range(N) if i % 10 == 7}
    assert without_text.isdisjoint(on.score(NAME, vector=query, using=TEXT, product_ids=everyone))
    assert without_text <= set(on.score(NAME, vector=query, using=IMAGE, product_ids=everyone))
    assert "absent" not in on.score(NAME, vector=query, using=IMAGE, product_ids=everyone)


def seen(store: EdgeStore, product_id: str, *, text: str, query: NDArray[np.float32]) -> dict[str, Any]:
    """What each read says of one product: its payload in a search, a lexical search and a retrieve, its score."""
    hits = {p.product_id: p for p in store.search(NAME, vector=query, using=IMAGE, limit=N)}
    words = {p.product_id: p for p in store.lexical_search(NAME, text=text, limit=N)}
    got = store.retrieve(NAME, [product_id])
    return {
        "search": hits[product_id].payload if product_id in hits else None,
        "lexical": words[product_id].payload if product_id in words else None,
        "retrieve": got[0].payload if got else None,
        "score": store.score(NAME, vector=query, using=IMAGE, product_ids=[product_id]).get(product_id),
    }


def test_set_payload_is_seen_by_the_next_reads(cached: EdgeStore, written: tuple[Path, list[PointWrite]]) -> None:
    before = written[1][3]
    query = unit_vectors(1, DIM, seed=8)[0]
    score = cached.score(NAME, vector=query, using=IMAGE, product_ids=["p003"])["p003"]
    new = {**before.payload, "title": "velvet lamp", "brand": "lumen"}
    cached.set_payload(NAME, {"p003": new})
    assert seen(cached, "p003", text="velvet", query=query) == \
        {"search": new, "lexical": new, "retrieve": new, "score": pytest.approx(score, abs=1e-6)}


def test_update_payload_is_seen_by_the_next_reads(cached: EdgeStore,
                                                   written: tuple[Path, list[PointWrite]]) -> None:
    before = written[1][4]
    query = unit_vectors(1, DIM, seed=8)[0]
    cached.update_payload(NAME, {"p004": {"brand": "lumen", "price": 1.5}})
    new = {**before.payload, "brand": "lumen", "price": 1.5}
    seen_now = seen(cached, "p004", text="product 4", query=query)
    assert (seen_now["search"], seen_now["lexical"], seen_now["retrieve"]) == (new, new, new)
    assert [p.product_id for p in cached.search(NAME, vector=query, using=IMAGE, limit=N,
                                                filter=Filter(must=(Match("brand", "lumen"),)))] == ["p004"]


def test_an_upsert_is_seen_by_the_next_reads(cached: EdgeStore, written: tuple[Path, list[PointWrite]]) -> None:
    before = written[1][5]
    query = unit_vectors(1, DIM, seed=8)[0]
    assert cached.score(NAME, vector=query, using=IMAGE, product_ids=["p005"])["p005"] < 0.99
    new = {**before.payload, "title": "copper kettle"}
    cached.upsert(NAME, [PointWrite("p005", new, {IMAGE: query, TEXT: before.vectors[TEXT]})])
    assert seen(cached, "p005", text="copper", query=query) == \
        {"search": new, "lexical": new, "retrieve": new, "score": pytest.approx(1.0, abs=1e-6)}
    top = cached.search(NAME, vector=query, using=IMAGE, limit=1)[0]
    assert (top.product_id, top.payload) == ("p005", new)
    assert top.score == pytest.approx(1.0, abs=1e-6)


def test_a_delete_is_seen_by_the_next_reads(cached: EdgeStore) -> None:
    query = unit_vectors(1, DIM, seed=8)[0]
    cached.delete(NAME, ["p006"])
    assert seen(cached, "p006", text="product 6", query=query) == \
        {"search": None, "lexical": None, "retrieve": None, "score": None}
    assert len(cached.search(NAME, vector=query, using=IMAGE, limit=N)) == N - 1
    assert "p006" not in {p.product_id for p in cached.retrieve(NAME, ["p006", "p007"], with_vectors=True)}


CHANGES: list[Callable[[dict[str, Any]], object]] = [
    lambda p: p.__setitem__("title", "changed"),
    lambda p: p.pop("brand"),
    lambda p: p.update(brand="other"),
    lambda p: p.setdefault("new", 1),
    lambda p: p.clear(),
    lambda p: p.__delitem__("title"),
    lambda p: p["attributes"].__setitem__("color", "pink"),  # nested values too (a shallow freeze would not)
    lambda p: p["attributes"]["sizes"].append("XXL"),
    lambda p: p["attributes"]["sizes"].__setitem__(0, "XXS"),
    lambda p: p["attributes"]["sizes"].sort(),
    lambda p: p["attributes"]["sizes"][1].update(stock=0),
]
LISTED = PointWrite("p900", {"id": "p900", "title": "product nine hundred", "brand": "acme",
                             "attributes": {"color": "red", "sizes": ["M", {"size": "L", "stock": 3}]}},
                    {IMAGE: unit_vectors(1, DIM, seed=90)[0]})


@pytest.mark.parametrize("change", range(len(CHANGES)))
def test_payloads_handed_out_cannot_be_changed(cached: EdgeStore, change: int) -> None:
    cached.upsert(NAME, [LISTED])
    query = LISTED.vectors[IMAGE]
    for got in (cached.search(NAME, vector=query, using=IMAGE, limit=5), cached.retrieve(NAME, ["p900", "p001"]),
                cached.lexical_search(NAME, text="product nine", limit=5)):
        assert got[0].payload == LISTED.payload
        for p in got:
            if p.product_id == "p900":
                with pytest.raises(TypeError, match=r"shared with the store's cache.*change a copy"):
                    CHANGES[change](p.payload)
    assert cached.search(NAME, vector=query, using=IMAGE, limit=1)[0].payload == LISTED.payload
    assert cached.retrieve(NAME, ["p900"])[0].payload == LISTED.payload


def test_copies_of_handed_out_payloads_are_plain(cached: EdgeStore) -> None:
    cached.upsert(NAME, [LISTED])
    shared = cached.search(NAME, vector=LISTED.vectors[IMAGE], using=IMAGE, limit=1)[0].payload
    deep = copy.deepcopy(shared)
    deep["attributes"]["sizes"][1]["stock"] = 0
    top = dict(shared)
    top["title"] = "changed"
    for plain in (deep, pickle.loads(pickle.dumps(shared)), json.loads(json.dumps(shared))):
        assert type(plain) is dict and type(plain["attributes"]) is dict
        assert type(plain["attributes"]["sizes"]) is list and type(plain["attributes"]["sizes"][1]) is dict
    assert cached.retrieve(NAME, ["p900"])[0].payload == LISTED.payload


def test_a_repeated_search_reads_nothing_from_the_engine(pair: tuple[EdgeStore, EdgeStore]) -> None:
    query = unit_vectors(1, DIM, seed=8)[0]
    for store, reads_again in zip(pair, (True, False), strict=True):  # cache off, then on
        opened = opened_of(store)
        calls = CountingShard(opened.shard)
        store._collections._opened[opened.physical] = replace(opened, shard=cast(Any, calls))
        first = store.search(NAME, vector=query, using=IMAGE, limit=20)
        after_first = calls.retrieves
        assert after_first == 1  # the payloads of the first search: one read
        second = store.search(NAME, vector=query, using=IMAGE, limit=20)
        assert calls.retrieves == (2 if reads_again else 1)
        assert [(p.product_id, p.payload) for p in second] == [(p.product_id, p.payload) for p in first]
        assert len(opened.points) == (0 if reads_again else 20)


class CountingShard:
    """An EdgeShard that counts its ``retrieve`` calls (everything else passes through)."""

    def __init__(self, shard: Any) -> None:
        self._shard = shard
        self.retrieves = 0

    def retrieve(self, *args: Any, **kwargs: Any) -> Any:
        self.retrieves += 1
        return self._shard.retrieve(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)
